"""Bot and worker settings, read from the environment (and a `.env` file) by pydantic-settings.

Every setting is `STYLECODES_<NAME>` in the environment, except the token, which is `DISCORD_TOKEN`
as every Discord tool spells it. The token is a `SecretStr`: it prints as `**********`, so a logged
settings object never leaks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stylecodes.codec import KNOWN_VERSIONS


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
    device: str = "cpu"  # "cuda", "cuda:1", "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # float16 halves GPU memory

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

    # --- Limits shown to users -----------------------------------------------------------------
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, ge=1)  # the 10 MB

    # --- Operations ----------------------------------------------------------------------------
    metrics_port: int | None = None  # Prometheus /metrics on this port when set
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
            if version not in KNOWN_VERSIONS:
                known = ", ".join(str(v) for v in KNOWN_VERSIONS)
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
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        from registry.config import default_database_url  # creates data_dir

        return default_database_url(self.data_dir)
