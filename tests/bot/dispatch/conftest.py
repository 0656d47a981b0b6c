"""Redis fixtures of the dispatch tests: a key prefix per test, and bot-side dispatchers (one per "bot process")."""

from __future__ import annotations

import pytest

from bot.dispatch.redis_streams import RedisDispatcher
from bot.protocol.streams import RedisKeys
from tests.bot.dispatch.helpers import mark_live, redis_limits


@pytest.fixture
def keys(redis_prefix) -> RedisKeys:
    return RedisKeys(redis_prefix)


@pytest.fixture
async def bots(redis_server, redis_client, keys):
    """Factory of bot-side dispatchers (each its own connection, as separate bot processes would have).

    Unless `standby=False`, a worker serving version 0 counts as live (as one that is still loading its
    models would), so jobs can be queued before a test starts its worker.
    """
    made = []

    async def make(*, standby: bool = True, session_factory=None, **overrides) -> RedisDispatcher:
        options = {k: overrides.pop(k) for k in ("follower_ttl_s", "sweep_interval_s") if k in overrides}
        dispatcher = RedisDispatcher.from_url(
            redis_server.url,
            limits=redis_limits(**overrides),
            keys=keys,
            session_factory=session_factory,
            poll_block_ms=200,
            **options,
        )
        await dispatcher.start()
        if standby:
            await mark_live(redis_client, keys)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        await dispatcher.close()
