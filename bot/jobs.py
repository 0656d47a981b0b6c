"""Jobs the bot hands to the worker, the events a job produces, and the errors that refuse one.

Plain dataclasses with `to_dict` / `from_dict`, so the same objects travel through the in-process
queue and, as JSON, through Redis. No discord imports: the worker process never loads discord.py.

A job's life, as its events tell it::

    JobQueued(position) -> JobStarted() -> JobProgress(step, total, preview_png)* -> JobDone(payload)
                                                                                   \\-> JobFailed(reason)

`JobDone` or `JobFailed` always ends the stream; every `reason` and every error message here is written
for the user and safe to show as it is.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stylecodes.checks import MAX_SEED
from stylecodes.codec import StyleCode, parse_code
from stylecodes.requests import GenerationRequest
from stylecodes.styles import CodeStyle

job_log = logging.getLogger("bot.jobs")


def consecutive_seeds(first: int, count: int) -> list[int]:
    """A job's seeds: `first` and the ones after it, wrapping past MAX_SEED.

    A usage row keeps only the first seed and the count, so every job's seeds follow this one rule:
    restart recovery and the result message rebuild them from the row.
    """
    return [(first + offset) % (MAX_SEED + 1) for offset in range(count)]


# The paper's preview prompts, rendered with fixed seeds so two previews of one code are comparable.
PREVIEW_PROMPTS: tuple[str, ...] = ("a close up man", "a woman portrait", "a cow", "a bottle on a desk")
PREVIEW_SEEDS: tuple[int, ...] = (0, 1, 2, 3)


def new_job_id() -> str:
    """A fresh job id: uuid4 hex, the same id as the registry's `Usage.job_id`."""
    return uuid.uuid4().hex


def log_job_event(event: str, job_id: str, **fields: Any) -> None:
    """One structured `key=value` line per job event, e.g. `event=started job_id=3f2a... kind=imagine`.

    Values with spaces are quoted, so `grep job_id=...` finds a job's whole life across processes.
    """
    parts = [f"event={event}", f"job_id={job_id}"]
    for key, value in fields.items():
        text = str(value)
        parts.append(f"{key}={text!r}" if (" " in text or not text) else f"{key}={text}")
    job_log.info(" ".join(parts))


# --- Errors raised by `Dispatcher.submit` ---------------------------------------------------------


class JobRejectedError(Exception):
    """Base of the errors that refuse a job at submit time. `str(err)` is the user-facing message."""


class QueueFullError(JobRejectedError):
    def __init__(self, queue_cap: int) -> None:
        self.queue_cap = queue_cap
        super().__init__(f"The bot is busy ({queue_cap} jobs are waiting), try again in a minute.")


class NoWorkerError(JobRejectedError):
    """Redis deployment: no live worker process serves the job's model version (all stopped or restarting)."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(
            f"No worker for model version {version} is running right now, so the job could not be queued. "
            "Try again in a few minutes."
        )


class UserJobLimitError(JobRejectedError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        plural = "job" if limit == 1 else "jobs"
        super().__init__(
            f"You already have {limit} {plural} queued or running; wait for one to finish, then try again."
        )


# --- Jobs ------------------------------------------------------------------------------------------


def _request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    return request.to_json()


def _request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest.from_json(data)


@dataclass
class EncodeJob:
    """Turn one image into a stylecode. `image` holds the bytes the bot downloaded and size-checked."""

    kind: ClassVar[str] = "encode"
    limited_per_user: ClassVar[bool] = True  # counts toward STYLECODES_MAX_JOBS_PER_USER
    job_id: str
    user_id: int
    version: int
    image: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job_id": self.job_id,
            "user_id": self.user_id,
            "version": self.version,
            "image": base64.b64encode(self.image).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncodeJob:
        return cls(data["job_id"], int(data["user_id"]), int(data["version"]), base64.b64decode(data["image"]))


@dataclass
class ImagineJob:
    """Generate `len(requests)` images (1-4). All requests share one `batch_key()` and `version`."""

    kind: ClassVar[str] = "imagine"
    wants_previews: ClassVar[bool] = True  # progress messages show a small preview
    limited_per_user: ClassVar[bool] = True
    job_id: str
    user_id: int
    guild_id: int | None
    channel_id: int
    version: int
    requests: list[GenerationRequest]

    def __post_init__(self) -> None:
        if not self.requests:
            raise ValueError("`requests` must hold at least one GenerationRequest")
        if len({r.batch_key() for r in self.requests}) != 1:
            raise ValueError("all `requests` of one job must share batch_key() (steps, guidance, size)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job_id": self.job_id,
            "user_id": self.user_id,
            "guild_id": self.guild_id,
            "channel_id": self.channel_id,
            "version": self.version,
            "requests": [_request_to_dict(r) for r in self.requests],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagineJob:
        return cls(
            job_id=data["job_id"],
            user_id=int(data["user_id"]),
            guild_id=None if data.get("guild_id") is None else int(data["guild_id"]),
            channel_id=int(data["channel_id"]),
            version=int(data["version"]),
            requests=[_request_from_dict(r) for r in data["requests"]],
        )


@dataclass
class PreviewJob:
    """Render the four-prompt preview grid of a saved revision; the worker stores it as WebP in the registry."""

    kind: ClassVar[str] = "preview"
    wants_previews: ClassVar[bool] = False  # nobody watches this one step by step
    # The bot starts it (after /stylecode save), not the user: it must not cost them one of their job
    # slots. It still counts toward the global queue cap.
    limited_per_user: ClassVar[bool] = False
    job_id: str
    user_id: int
    revision_id: int
    code: str  # canonical stylecode of the revision; its version digit picks the model
    steps: int = 20
    guidance_scale: float = 3.0
    size: int = 512  # each tile; the grid is 2x2 tiles

    def __post_init__(self) -> None:
        self.code = parse_code(self.code).canonical  # fail at construction, not in the worker

    @property
    def version(self) -> int:
        return parse_code(self.code).version

    @property
    def requests(self) -> list[GenerationRequest]:
        style = parse_code(self.code)
        return [
            GenerationRequest(
                prompt=prompt,
                seed=seed,
                styles=(CodeStyle(style),),
                steps=self.steps,
                guidance_scale=self.guidance_scale,
                width=self.size,
                height=self.size,
            )
            for prompt, seed in zip(PREVIEW_PROMPTS, PREVIEW_SEEDS, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreviewJob:
        return cls(**{k: v for k, v in data.items() if k != "kind"})


Job = EncodeJob | ImagineJob | PreviewJob
_JOB_TYPES: dict[str, type[EncodeJob] | type[ImagineJob] | type[PreviewJob]] = {
    t.kind: t for t in (EncodeJob, ImagineJob, PreviewJob)
}


def job_from_dict(data: dict[str, Any]) -> Job:
    try:
        job_type = _JOB_TYPES[data["kind"]]
    except KeyError:
        raise ValueError(f"unknown job kind {data.get('kind')!r}; known kinds are {sorted(_JOB_TYPES)}") from None
    return job_type.from_dict(data)


def batch_key(job: Job) -> tuple:
    """Jobs with equal keys can share one engine call: same kind of work, same model, same shape."""
    if isinstance(job, EncodeJob):
        return ("encode", job.version)
    return ("generate", job.version, job.requests[0].batch_key())


def job_size(job: Job) -> int:
    """Samples the job adds to a batch."""
    return 1 if isinstance(job, EncodeJob) else len(job.requests)


# --- Results ---------------------------------------------------------------------------------------


@dataclass
class EncodeResult:
    kind: ClassVar[str] = "encode"
    codes: list[StyleCode]  # one per image; an EncodeJob has one

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "codes": [c.canonical for c in self.codes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncodeResult:
        return cls([parse_code(c) for c in data["codes"]])


@dataclass
class ImagineResult:
    kind: ClassVar[str] = "imagine"
    images_png: list[bytes]
    nsfw: list[bool | None]  # per image; None = this model has no safety checker
    warnings: list[str] = field(default_factory=list)  # e.g. "prompt truncated to 77 tokens", deduplicated
    metadata: list[dict[str, Any]] = field(default_factory=list)  # per image: everything to reproduce it

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "images_png": [base64.b64encode(b).decode("ascii") for b in self.images_png],
            "nsfw": self.nsfw,
            "warnings": self.warnings,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagineResult:
        return cls(
            images_png=[base64.b64decode(b) for b in data["images_png"]],
            nsfw=list(data["nsfw"]),
            warnings=list(data["warnings"]),
            metadata=list(data["metadata"]),
        )


@dataclass
class PreviewResult:
    kind: ClassVar[str] = "preview"
    revision_id: int
    grid_webp: bytes  # also stored in the registry with set_revision_preview

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "revision_id": self.revision_id,
            "grid_webp": base64.b64encode(self.grid_webp).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreviewResult:
        return cls(int(data["revision_id"]), base64.b64decode(data["grid_webp"]))


JobResult = EncodeResult | ImagineResult | PreviewResult
_RESULT_TYPES = {t.kind: t for t in (EncodeResult, ImagineResult, PreviewResult)}


# --- Events ----------------------------------------------------------------------------------------


@dataclass
class JobQueued:
    kind: ClassVar[str] = "queued"
    position: int  # 1 = next to start; counts the jobs waiting (not running) for the same model


@dataclass
class JobStarted:
    kind: ClassVar[str] = "started"


@dataclass
class JobProgress:
    kind: ClassVar[str] = "progress"
    step: int  # 1..total
    total: int
    preview_png: bytes | None = None  # small PNG of the first image, when the job wants previews


@dataclass
class JobDone:
    kind: ClassVar[str] = "done"
    payload: JobResult


@dataclass
class JobFailed:
    kind: ClassVar[str] = "failed"
    reason: str  # user-facing
    code: str = "error"  # machine-readable cause, the `reason` label of the failure metric

    # Known codes.
    ENGINE_ERROR: ClassVar[str] = "engine_error"
    BAD_INPUT: ClassVar[str] = "bad_input"
    DELIVERY_LIMIT: ClassVar[str] = "delivery_limit"
    RESTART: ClassVar[str] = "restart"
    UNSERVED_VERSION: ClassVar[str] = "unserved_version"
    DUPLICATE: ClassVar[str] = "duplicate"
    LOST: ClassVar[str] = "lost"
    NO_WORKER: ClassVar[str] = "no_worker"


JobEvent = JobQueued | JobStarted | JobProgress | JobDone | JobFailed
TERMINAL_EVENTS = (JobDone, JobFailed)


def event_to_dict(event: JobEvent) -> dict[str, Any]:
    if isinstance(event, JobQueued):
        return {"kind": event.kind, "position": event.position}
    if isinstance(event, JobStarted):
        return {"kind": event.kind}
    if isinstance(event, JobProgress):
        preview = None if event.preview_png is None else base64.b64encode(event.preview_png).decode("ascii")
        return {"kind": event.kind, "step": event.step, "total": event.total, "preview_png": preview}
    if isinstance(event, JobDone):
        return {"kind": event.kind, "payload": event.payload.to_dict()}
    if isinstance(event, JobFailed):
        return {"kind": event.kind, "reason": event.reason, "code": event.code}
    raise TypeError(f"not a job event: {event!r}")


def event_from_dict(data: dict[str, Any]) -> JobEvent:
    kind = data.get("kind")
    if kind == "queued":
        return JobQueued(int(data["position"]))
    if kind == "started":
        return JobStarted()
    if kind == "progress":
        preview = data.get("preview_png")
        preview_png = None if preview is None else base64.b64decode(preview)
        return JobProgress(int(data["step"]), int(data["total"]), preview_png)
    if kind == "done":
        payload = data["payload"]
        return JobDone(_RESULT_TYPES[payload["kind"]].from_dict(payload))
    if kind == "failed":
        return JobFailed(data["reason"], data.get("code", "error"))
    raise ValueError(f"unknown job event kind {kind!r}")
