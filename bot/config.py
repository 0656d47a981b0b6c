"""Bot and worker settings, read from the environment (and a `.env` file) by pydantic-settings.

Every setting is `STYLECODES_<NAME>` in the environment, except the token, which is `DISCORD_TOKEN`
as every Discord tool spells it. The token is a `SecretStr`: it prints as `**********`, so a logged
settings object never leaks it.

The entry points (`python -m bot`, `python -m bot.worker`) start with `load_settings()`: it first copies
`.env` into the process environment (`load_env_file`), so the variables that other libraries read from
`os.environ` (`STYLECODES_V1_*` local model paths, `HF_HUB_OFFLINE`, `HF_HOME`) work from `.env` too, and
it turns invalid settings into a `StartupError`: a message for the operator, not a traceback.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stylecodes.versions import VERSIONS
from web import config as web_config

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_DATABASE_DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")  # the async drivers the project installs


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STYLECODES_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # a shared .env may hold other tools' variables
    )

    # --- Discord -------------------------------------------------------------------------------
    # None only so that `python -m bot` can explain how to get one instead of a validation traceback.
    discord_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("DISCORD_TOKEN"))
    # 0 = one connection. Above 0 the bot runs as an AutoShardedBot with that many shards; -1 lets
    # Discord pick the count (what large bots want).
    shard_count: int = 0
    # With shard_count > 0: the shards this process runs, e.g. `0,1` in one bot and `2,3` in another, so
    # several bot processes share the load. Empty = all of them.
    shard_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # Guild to copy the global commands to when syncing by hand (`python -m bot --sync`): guild
    # commands update instantly, global ones take up to an hour.
    dev_guild_id: int | None = None

    # --- Storage -------------------------------------------------------------------------------
    data_dir: Path = Path("data")
    # None = SQLite file under data_dir. PostgreSQL at scale: postgresql+asyncpg://user:pw@host/db
    database_url: str | None = None
    # Set = Redis Streams scale-out (any number of bot and worker processes); unset = in-process queue.
    redis_url: str | None = None

    # --- Models --------------------------------------------------------------------------------
    model_version: int = 1  # version new codes are encoded with; 0 = the tiny demo model
    # Versions this process's worker serves (generation follows each code's version digit).
    # Empty = just `model_version`.
    served_versions: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # "auto": CUDA when torch sees a GPU, else the CPU (see `resolve_device`). "cuda" in a Redis worker
    # claims a GPU no other worker holds (bot/worker/gpu_lease.py); "cuda:1" pins one.
    device: str = "auto"
    # "auto": float16 on CUDA, float32 on the CPU. float16 halves GPU memory.
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    image_size: int = Field(default=512, ge=64, le=1024, multiple_of=8)  # px, square; SD1.5 is trained at 512
    preview_steps: int = Field(default=20, ge=1, le=100)  # denoising steps of a saved style's preview grid

    # --- Jobs ----------------------------------------------------------------------------------
    max_jobs_per_user: int = Field(default=2, ge=1)  # queued + running, per user
    queue_cap: int = Field(default=100, ge=1)  # jobs waiting in total before "busy, try again"
    max_batch_size: int = Field(default=4, ge=1)  # samples per GPU batch
    progress_interval_s: float = Field(default=1.5, ge=1.0)  # Discord allows ~5 edits / 5 s per channel
    # Redis transport: a job pending this long on a silent worker is reclaimed by another one...
    job_idle_timeout_s: float = Field(default=120.0, gt=0)
    # ...and failed, with the user told why, after this many deliveries.
    max_deliveries: int = Field(default=3, ge=1)
    # Redis transport: a job still queued this long while no live worker serves its version is failed,
    # with the reason, instead of showing "Queued" forever.
    max_queue_wait_s: float = Field(default=600.0, gt=0)

    # --- Limits shown to users -----------------------------------------------------------------
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, ge=1)  # the 10 MB

    # --- Operations ----------------------------------------------------------------------------
    metrics_port: int | None = None  # Prometheus /metrics on this port when set
    # The public web gallery (web/, docs/web.md), served inside this process. Empty or 0 = off.
    web_port: int | None = Field(default=web_config.DEFAULT_PORT, ge=0, le=65535)
    web_host: str = web_config.DEFAULT_HOST  # 0.0.0.0 to serve every interface
    # The gallery's public address, for `/stylecode show` links and OpenGraph tags; None = localhost:web_port.
    web_base_url: str | None = None
    web_rate_limit: str = web_config.DEFAULT_RATE_LIMIT  # requests per client IP
    # Discord's REST API base. Set it to route the bot through an HTTP proxy in front of Discord
    # (large bots share one rate limiter that way), or to a local stand-in in tests.
    discord_api_base: str = "https://discord.com/api/v10"
    # Discord's gateway websocket, likewise for a gateway proxy or a stand-in. None = Discord's own.
    discord_gateway_url: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("web_port", mode="before")
    @classmethod
    def _web_port_off(cls, value: object) -> object:
        return None if value in ("", "0", 0) else value

    @field_validator("web_base_url")
    @classmethod
    def _check_web_base_url(cls, value: str | None) -> str | None:
        return web_config.check_base_url(value)

    @field_validator("web_rate_limit")
    @classmethod
    def _check_web_rate_limit(cls, value: str) -> str:
        return web_config.check_rate_limit(value)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N (N = the GPU index) or mps")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            driver = make_url(value.strip()).drivername
        except ArgumentError:
            driver = None
        if driver not in _DATABASE_DRIVERS:
            raise ValueError(
                f"{redact_url(value)!r} is not a database URL this project can use; "
                "use postgresql+asyncpg://user:password@host:5432/stylecodes or sqlite+aiosqlite:///path/to/file.db"
            )
        return value.strip()

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        if urllib.parse.urlsplit(value.strip()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"{redact_url(value)!r} is not a Redis URL; use redis://[:password@]host:6379/0 "
                "(rediss:// for TLS)"
            )
        return value.strip()

    @field_validator("served_versions", "shard_ids", mode="before")
    @classmethod
    def _split_numbers(cls, value: object) -> object:
        # `STYLECODES_SERVED_VERSIONS=0,1` (or `[0, 1]`); the same for STYLECODES_SHARD_IDS.
        if isinstance(value, str):
            return [int(part) for part in value.strip(" []").replace(" ", "").split(",") if part]
        if isinstance(value, int):
            return [value]
        return value

    @model_validator(mode="after")
    def _check_versions(self) -> Settings:
        if self.shard_ids and not all(0 <= shard < self.shard_count for shard in self.shard_ids):
            raise ValueError(
                f"STYLECODES_SHARD_IDS={self.shard_ids} needs STYLECODES_SHARD_COUNT above every id "
                f"(got {self.shard_count}); e.g. SHARD_COUNT=4 with SHARD_IDS=0,1 in one bot and 2,3 in another"
            )
        for version in [self.model_version, *self.served_versions]:
            if version not in VERSIONS:
                known = ", ".join(str(v) for v in VERSIONS)
                raise ValueError(f"model version {version} does not exist; known versions are {known}")
        if self.served_versions and self.model_version not in self.served_versions:
            raise ValueError(
                f"STYLECODES_MODEL_VERSION={self.model_version} must be one of "
                f"STYLECODES_SERVED_VERSIONS={self.served_versions}"
            )
        return self

    @property
    def versions_served(self) -> tuple[int, ...]:
        """The versions this deployment's workers load (sorted, never empty)."""
        return tuple(sorted(set(self.served_versions) or {self.model_version}))

    @property
    def gallery_url(self) -> str | None:
        """Where the public gallery is reached (links to style pages), or None when it is off and unset."""
        if self.web_base_url:
            return self.web_base_url
        return None if self.web_port is None else web_config.default_base_url(self.web_port)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        from registry.config import default_database_url  # creates data_dir

        return default_database_url(self.data_dir)


# --- Devices ---------------------------------------------------------------------------------------


def resolve_device(requested: str, gpu_count: int) -> str:
    """The torch device for the `STYLECODES_DEVICE` setting, given how many CUDA GPUs this process sees.

    "auto" is "cuda" with a GPU and "cpu" without. Asking for a GPU that is not there is a `StartupError`
    (a CPU build of torch, a container started without GPUs, or an index past the last GPU).
    """
    if requested == "auto":
        return "cuda" if gpu_count > 0 else "cpu"
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        if index >= gpu_count:
            seen = f"only {gpu_count} GPU(s) (cuda:0 to cuda:{gpu_count - 1})" if gpu_count else "no CUDA GPU"
            raise StartupError(
                f"STYLECODES_DEVICE={requested} asks for a GPU, but this process sees {seen}. Install the CUDA "
                "build of torch, give the container the GPUs (the compose file reserves them for the worker), "
                "or set STYLECODES_DEVICE=auto (the GPU when there is one, else the CPU) or cpu."
            )
    return requested


def resolve_dtype(requested: str, device: str) -> str:
    """The torch dtype name for `STYLECODES_DTYPE` on `device`: "auto" is float16 on CUDA, float32 elsewhere."""
    if requested != "auto":
        return requested
    return "float16" if device.startswith("cuda") else "float32"


# --- Startup ---------------------------------------------------------------------------------------


class StartupError(Exception):
    """Something the operator has to fix before the process can start; `str()` says what and how.

    The entry points print it without a traceback and exit with status 2.
    """


def load_env_file(path: str | Path = ".env") -> None:
    """Copy `path` (a dotenv file) into `os.environ`, for the keys the environment does not set already.

    Settings read `.env` themselves; this is for what other code reads from `os.environ` only: the
    `STYLECODES_V1_*` local model paths and Hugging Face's `HF_HUB_OFFLINE` and `HF_HOME`. Call it
    before anything imports huggingface_hub, which reads its variables at import.
    """
    from dotenv import dotenv_values  # python-dotenv, which pydantic-settings reads `.env` with

    for key, value in dotenv_values(path, encoding="utf-8").items():
        if value is not None and key not in os.environ:
            os.environ[key] = value


def load_settings() -> Settings:
    """`.env` into the environment, then the validated settings; invalid ones raise `StartupError`."""
    load_env_file()
    try:
        return Settings()
    except ValidationError as exc:
        raise StartupError(describe_invalid_settings(exc)) from None


def describe_invalid_settings(exc: ValidationError) -> str:
    """One line per problem: the setting, its variable, what is wrong and the value given (passwords masked)."""
    lines = ["Invalid settings (environment or .env):"]
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across settings: the message names them
            lines.append(f"  {message}")
            continue
        field = str(error["loc"][0])
        alias = Settings.model_fields[field].validation_alias if field in Settings.model_fields else None
        variable = alias.choices[0] if isinstance(alias, AliasChoices) else f"STYLECODES_{field.upper()}"
        given = error.get("input")
        # Our own checks (value_error) quote the value themselves; never echo the token.
        if error["type"] != "value_error" and field != "discord_token" and isinstance(given, str | int | float):
            message += f" (got {redact_url(str(given))!r})"
        lines.append(f"  {field} ({variable}): {message}")
    return "\n".join(lines)


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


async def check_database(url: str, engine: Any) -> None:
    """Open one connection to the registry (`engine`, an AsyncEngine for `url`); failure is a `StartupError`."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError) as exc:
        raise database_unreachable(url, exc) from None


def database_unreachable(url: str, exc: BaseException) -> StartupError:
    if url.startswith("sqlite"):
        how = (
            "Check that the folder exists or can be created and is writable by this user "
            "(STYLECODES_DATA_DIR, default ./data), or point STYLECODES_DATABASE_URL at another file."
        )
    else:
        how = (
            "Check that the database server is running and reachable from here, and that "
            "STYLECODES_DATABASE_URL has the right host, port, user, password and database name "
            "(postgresql+asyncpg://user:password@host:5432/stylecodes)."
        )
    return StartupError(f"Could not open the registry database at {redact_url(url)}: {error_text(exc)}. {how}")


def redis_unreachable(url: str, exc: BaseException) -> StartupError:
    return StartupError(
        f"Could not connect to Redis at {redact_url(url)}: {error_text(exc)}. Check that Redis is running and "
        "reachable from here and that STYLECODES_REDIS_URL is right (redis://[:password@]host:6379/0, "
        "rediss:// for TLS); the password must match Redis's requirepass. Without Redis, unset "
        "STYLECODES_REDIS_URL: `python -m bot` then runs its own in-process worker."
    )


def data_dir_unusable(data_dir: Path, exc: OSError) -> StartupError:
    return StartupError(
        f"Could not create the data folder {data_dir} (STYLECODES_DATA_DIR): {error_text(exc)}. Point "
        "STYLECODES_DATA_DIR at a folder this user may write, or set STYLECODES_DATABASE_URL."
    )


def error_text(exc: BaseException) -> str:
    """`Type: first line of the message`, without a trailing full stop (the caller's sentence goes on)."""
    text = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
