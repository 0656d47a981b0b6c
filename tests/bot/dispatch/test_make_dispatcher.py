"""Settings pick the transport; the worker entry point explains itself when Redis is not configured."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.dispatch import make_dispatcher
from bot.dispatch.local import LocalDispatcher
from bot.dispatch.redis_streams import RedisDispatcher


async def test_local_by_default_with_limits_from_settings(session_factory, demo_engine):
    settings = Settings(model_version=0, max_jobs_per_user=3, queue_cap=7, max_batch_size=2, progress_interval_s=2)
    dispatcher = make_dispatcher(settings, session_factory=session_factory, engine_loader=lambda v: demo_engine)
    assert isinstance(dispatcher, LocalDispatcher)
    assert dispatcher.limits.served_versions == (0,)
    assert (dispatcher.limits.max_jobs_per_user, dispatcher.limits.queue_cap) == (3, 7)
    assert (dispatcher.limits.max_batch_size, dispatcher.limits.progress_interval_s) == (2, 2)
    assert dispatcher.models.get(0) is demo_engine
    await dispatcher.close()


@pytest.mark.redis
async def test_redis_when_the_url_is_set(session_factory, redis_server):
    settings = Settings(model_version=0, served_versions=[0], redis_url=redis_server.url)
    dispatcher = make_dispatcher(settings, session_factory=session_factory)
    assert isinstance(dispatcher, RedisDispatcher)
    assert dispatcher.session_factory is session_factory  # its sweep records the jobs it gives up
    await dispatcher.start()  # connects (and would fail here with a wrong URL)
    await dispatcher.close()


def test_worker_without_redis_url_explains_and_exits_2(monkeypatch, capsys, tmp_path):
    from bot.worker.__main__ import main

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("STYLECODES_REDIS_URL", raising=False)
    monkeypatch.setenv("STYLECODES_MODEL_VERSION", "0")
    assert main() == 2
    assert "set STYLECODES_REDIS_URL" in capsys.readouterr().err
