"""Job dispatch: the in-process queue by default, Redis Streams when `STYLECODES_REDIS_URL` is set."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.dispatch.base import Dispatcher, JobHandle
from bot.dispatch.local import LocalDispatcher
from bot.dispatch.redis_streams import RedisDispatcher
from bot.protocol.limits import DispatchLimits
from bot.worker.models import ModelCache, configured_engine_loader

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from bot.config import Settings

__all__ = ["DispatchLimits", "Dispatcher", "JobHandle", "make_dispatcher"]


def make_dispatcher(
    settings: Settings,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    engine_loader: Callable[[int], Any] | None = None,
) -> Dispatcher:
    """The dispatcher the settings ask for: Redis Streams when `redis_url` is set, else in-process.

    `engine_loader(version)` loads a model (default: `StyleEngine.load` on the configured device and
    dtype); only the in-process dispatcher runs models, the Redis one leaves that to `python -m bot.worker`.
    Call `await dispatcher.start()` before submitting and `await dispatcher.close()` at shutdown.
    """
    limits = DispatchLimits.from_settings(settings)
    if settings.redis_url:
        # The session factory lets its sweep mark the usage rows of jobs it gives up (no live worker).
        return RedisDispatcher.from_url(settings.redis_url, limits=limits, session_factory=session_factory)
    loader = engine_loader or configured_engine_loader(settings)
    return LocalDispatcher(limits=limits, models=ModelCache(loader), session_factory=session_factory)
