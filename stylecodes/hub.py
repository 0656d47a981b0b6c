"""Finding a version's weights: a local path from the environment, or a Hub download on first use.

Downloads go through `huggingface_hub` (its cache, its tqdm progress bars, `HF_HUB_OFFLINE`, `HF_TOKEN`).
Any failure becomes a `ModelLoadError` whose one-line message says what was missing and how to point the
tool at local files instead. Torch-free.

The control checkpoint is picked from the repo's file listing (`ModelVersionSpec.checkpoint_files`), at one commit.
The first commit resolved is recorded in the Hugging Face cache as the ref `stylecodes-v<N>` (`pin_ref`) and every
later load reads that commit, so a new upload to the repo never silently changes what a code means.
`ModelFingerprint` records what exactly was loaded: the file's sha256, its source and its commit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stylecodes.versions import ModelVersionSpec, local_path_help

logger = logging.getLogger(__name__)

# `owner/name`: how a Hub repo id looks (a local folder of that shape that exists wins).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
DEFAULT_BRANCH = "main"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")  # a git commit hash: what every Hub revision resolves to
_SHA256 = re.compile(r"^[0-9a-f]{64}$")  # the cache names an LFS file's blob after the sha256 of its content
_LISTED_FILES = 30  # how many of a repo's files an error message names

# The parts of an SD1.5 diffusers repo that the pipeline needs: fp32 safetensors weights and configs,
# not the multi-GB original-format checkpoints or the fp16/.bin duplicates stored beside them.
_BASE_MODEL_FILES = [
    "model_index.json",
    "scheduler/*.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
    "feature_extractor/*.json",
]
_IMAGE_ENCODER_FILES = ["config.json", "model.safetensors", "preprocessor_config.json"]


class ModelLoadError(RuntimeError):
    """The model's files could not be found, downloaded or read. The message says how to fix it."""


@dataclass(frozen=True)
class BaseModelSource:
    """An SD1.5 base: a diffusers folder, or a single-file checkpoint (`is_single_file`)."""

    path: Path
    is_single_file: bool
    label: str  # what the user configured, for metadata and messages


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """The control checkpoint a version loads, and where exactly it came from."""

    path: Path  # a local file (for the Hub: the file in the Hugging Face cache)
    repo: str | None  # the Hub repo; None for a local file set in the environment
    filename: str  # the file's path inside `repo` (for a local file: its name)
    revision: str | None  # the commit hash of `repo` it was downloaded at

    @property
    def source(self) -> str:
        return f"hf://{self.repo}/{self.filename}" if self.repo else str(self.path)

    def describe(self) -> str:
        if self.repo is None:
            return str(self.path)
        return f"{self.repo}/{self.filename} at revision {self.revision} ({self.path})"


@dataclass(frozen=True)
class ModelFingerprint:
    """What exactly a loaded version's weights are. The same fingerprint means the same codes and images."""

    sha256: str  # of the control checkpoint file (for the demo: of its weights, serialised)
    source: str  # hf://owner/repo/file, a local path, or how the demo was built
    revision: str | None  # the Hub commit hash; None for local files and the demo

    def as_metadata(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


def resolve_checkpoint(spec: ModelVersionSpec) -> ResolvedCheckpoint:
    """The control-module checkpoint as a local file: the environment's path, else the repo's one checkpoint file.

    Without an explicit revision setting, the repo is read at its pinned commit (`pin_ref`), or the first time at
    `main`, whose commit is then pinned. No network call is made when the pinned commit's file is already cached.
    """
    settings = spec.local_paths()
    if settings.checkpoint is not None:
        path = Path(settings.checkpoint).expanduser()
        if not path.is_file():
            raise ModelLoadError(
                f"{spec.env_var('CHECKPOINT')}={settings.checkpoint} is not a file. {local_path_help(spec)}"
            )
        return ResolvedCheckpoint(path, repo=None, filename=path.name, revision=None)
    assert spec.checkpoint_repo and spec.checkpoint_files
    revision = settings.revision or _read_ref(pin_ref(spec))
    commit, filename = _find_checkpoint_file(spec, revision, settings.checkpoint_file)
    path = _download(spec, filename, commit)
    if settings.revision is None and revision != commit:
        _write_pin(spec, commit)
    logger.info(
        "Model version %d: checkpoint %s/%s at revision %s.", spec.version, spec.checkpoint_repo, filename, commit
    )
    return ResolvedCheckpoint(path, repo=spec.checkpoint_repo, filename=filename, revision=commit)


def pin_ref(spec: ModelVersionSpec) -> Path:
    """The cache ref recording the commit of `spec.checkpoint_repo` that this version reads (`hf cache ls` shows it)."""
    assert spec.checkpoint_repo
    return _cache_folder(spec.checkpoint_repo) / "refs" / f"stylecodes-v{spec.version}"


def fingerprint(spec: ModelVersionSpec, checkpoint: ResolvedCheckpoint) -> ModelFingerprint:
    """Hash the checkpoint (streamed) and, for a Hub download, check the hash against the Hub's own.

    The cache stores a downloaded file as a blob named after the sha256 the Hub has for it, so a damaged download
    (interrupted, disk error) is caught here, with what to do, before any weight is read.
    """
    digest = file_sha256(checkpoint.path)
    blob = checkpoint.path.resolve()
    if checkpoint.repo and blob.parent.name == "blobs" and _SHA256.match(blob.name) and blob.name != digest:
        raise ModelLoadError(
            f"{checkpoint.describe()} is damaged: its sha256 is {digest} but the Hub's is {blob.name} (an interrupted "
            f"or corrupted download). {redownload_help(spec, checkpoint)}"
        )
    return ModelFingerprint(digest, checkpoint.source, checkpoint.revision)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read once per process for each (path, size, modification time)."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def redownload_help(spec: ModelVersionSpec, checkpoint: ResolvedCheckpoint) -> str:
    """What to do about a checkpoint file that cannot be used."""
    if checkpoint.repo is None:
        return f"Replace {checkpoint.path} ({spec.env_var('CHECKPOINT')}) with a good copy of the checkpoint."
    return (
        f"Download it again (`hf download {checkpoint.repo} {checkpoint.filename} --revision {checkpoint.revision} "
        f"--force-download`); if it is the wrong file of the repo, set {spec.env_var('CHECKPOINT_FILE')} to the "
        f"right one, or {spec.env_var('CHECKPOINT')} to a local checkpoint (docs/operations.md)."
    )


def resolve_base_model(spec: ModelVersionSpec) -> BaseModelSource:
    """The SD1.5 base: env override (folder, single file or another Hub id), else the spec's Hub id."""
    configured = spec.local_paths().base_model or spec.base_model
    assert configured is not None
    path = Path(configured).expanduser()
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(
                f"{spec.setting('BASE_MODEL')}={configured} is a file but not a .safetensors or .ckpt checkpoint."
            )
        return BaseModelSource(path, is_single_file=True, label=configured)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{spec.setting('BASE_MODEL')}={configured} is a folder without model_index.json; "
                "it must be a diffusers pipeline folder (StableDiffusionPipeline.save_pretrained)."
            )
        return BaseModelSource(path, is_single_file=False, label=configured)
    if not _HUB_ID.match(configured):
        raise ModelLoadError(f"{spec.setting('BASE_MODEL')}={configured} does not exist. {local_path_help(spec)}")
    return BaseModelSource(_snapshot(spec, configured, _BASE_MODEL_FILES), is_single_file=False, label=configured)


def resolve_image_encoder(spec: ModelVersionSpec) -> Path:
    """The SigLIP vision tower as a local folder (`from_pretrained`-loadable)."""
    configured = spec.local_paths().image_encoder or spec.image_encoder
    assert configured is not None
    path = Path(configured).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{spec.setting('IMAGE_ENCODER')}={configured} has no config.json; it must be a "
                f"SiglipVisionModel/SiglipModel folder (a save of {spec.image_encoder})."
            )
        return path
    if not _HUB_ID.match(configured):
        raise ModelLoadError(f"{spec.setting('IMAGE_ENCODER')}={configured} does not exist. {local_path_help(spec)}")
    return _snapshot(spec, configured, _IMAGE_ENCODER_FILES)


def _snapshot(spec: ModelVersionSpec, repo_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # network, offline mode, gated repo, disk full: all become one clear message
        raise _download_error(spec, repo_id, exc) from exc


def _download_error(spec: ModelVersionSpec, what: str, exc: Exception) -> ModelLoadError:
    from huggingface_hub import constants

    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if constants.HF_HUB_OFFLINE:
        situation = _offline_situation(what)
    else:
        situation = f"could not download {what} from the Hugging Face Hub ({type(exc).__name__}: {reason})"
    return ModelLoadError(f"Model version {spec.version}: {situation}. {local_path_help(spec)}")


def _offline_situation(what: str) -> str:
    return f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"


# ------------------------------------------------------------------------------------ the checkpoint repo's files


@dataclass(frozen=True)
class _RepoListing:
    repo: str
    commit: str
    files: tuple[str, ...]
    from_cache: bool  # True: what the local cache holds of that commit (perhaps not every file)

    def describe(self) -> str:
        where = "the local Hugging Face cache of " if self.from_cache else ""
        return f"{where}{self.repo} at revision {self.commit}"


def _find_checkpoint_file(spec: ModelVersionSpec, revision: str | None, configured: str | None) -> tuple[str, str]:
    """(commit hash, file name) of the checkpoint in `spec.checkpoint_repo` at `revision` (None: the default branch).

    Offline, the cache's copy of the revision is listed. Online, a commit whose file the cache already holds is
    used as is (a commit never changes); anything else is listed on the Hub, falling back to the cache when the Hub
    cannot be reached.
    """
    from huggingface_hub import constants

    repo = spec.checkpoint_repo
    assert repo
    what = repo if revision is None else f"{repo} at revision {revision}"
    cached = _cached_listing(repo, revision or DEFAULT_BRANCH)
    if constants.HF_HUB_OFFLINE:
        if cached is None:
            raise ModelLoadError(f"Model version {spec.version}: {_offline_situation(what)}. {local_path_help(spec)}")
        return cached.commit, _choose_checkpoint_file(spec, cached, configured)
    if cached is not None and revision is not None and _COMMIT.match(revision):
        try:
            return cached.commit, _choose_checkpoint_file(spec, cached, configured)
        except ModelLoadError:
            pass  # the cache holds other files of that commit: ask the Hub
    try:
        listing = _hub_listing(repo, revision)
    except Exception as exc:  # network, gated repo, unknown revision: see _download_error
        if cached is None:
            raise _download_error(spec, what, exc) from exc
        logger.warning(
            "Could not list %s on the Hugging Face Hub (%s); using the cached revision %s.",
            what,
            type(exc).__name__,
            cached.commit,
        )
        listing = cached
    return listing.commit, _choose_checkpoint_file(spec, listing, configured)


def _choose_checkpoint_file(spec: ModelVersionSpec, listing: _RepoListing, configured: str | None) -> str:
    """The configured file, else the one file with a known checkpoint name; otherwise a message listing every file."""
    setting = spec.env_var("CHECKPOINT_FILE")
    if configured is not None:
        if configured in listing.files:
            return configured
        problem = f"has no file `{configured}` (set by {setting})"
    else:
        found = _prefer_safetensors([name for name in listing.files if _base_name(name) in spec.checkpoint_files])
        if len(found) == 1:
            return found[0]
        if found:
            problem = f"has several checkpoint files ({', '.join(found)})"
        else:
            problem = f"has none of the known checkpoint files ({', '.join(spec.checkpoint_files)})"
    shown = ", ".join(listing.files[:_LISTED_FILES]) or "no files"
    more = f" and {len(listing.files) - _LISTED_FILES} more" if len(listing.files) > _LISTED_FILES else ""
    raise ModelLoadError(
        f"Model version {spec.version}: {listing.describe()} {problem}. It holds: {shown}{more}. Set {setting} to "
        f"the file to use (its path in the repo), or {spec.env_var('CHECKPOINT')} to a local checkpoint file."
    )


def _prefer_safetensors(names: list[str]) -> list[str]:
    """A `.bin` and a `.safetensors` of the same name are one checkpoint in two formats: keep the safetensors."""
    converted = {_stem(name) for name in names if name.endswith(".safetensors")}
    return [name for name in names if name.endswith(".safetensors") or _stem(name) not in converted]


def _stem(name: str) -> str:
    return str(PurePosixPath(name).with_suffix(""))


def _base_name(name: str) -> str:
    return PurePosixPath(name).name


def _hub_listing(repo: str, revision: str | None) -> _RepoListing:
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, revision=revision)
    files = tuple(sorted(sibling.rfilename for sibling in info.siblings or ()))
    return _RepoListing(repo, info.sha, files, from_cache=False)


def _cached_listing(repo: str, revision: str) -> _RepoListing | None:
    """The files the cache holds of `repo` at `revision` (a commit, or a branch or tag it has a ref of)."""
    folder = _cache_folder(repo)
    commit = revision if _COMMIT.match(revision) else _read_ref(folder / "refs" / revision)
    if commit is None or not (folder / "snapshots" / commit).is_dir():
        return None
    snapshot = folder / "snapshots" / commit
    files = tuple(sorted(path.relative_to(snapshot).as_posix() for path in snapshot.rglob("*") if path.is_file()))
    return _RepoListing(repo, commit, files, from_cache=True)


def _download(spec: ModelVersionSpec, filename: str, commit: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:  # at a commit hash, a file the cache holds is returned without any network call
        return Path(hf_hub_download(spec.checkpoint_repo, filename, revision=commit))
    except Exception as exc:  # see _download_error
        raise _download_error(spec, f"{spec.checkpoint_repo}/{filename} at revision {commit}", exc) from exc


def _cache_folder(repo: str) -> Path:
    """huggingface_hub's cache layout: `<HF_HUB_CACHE>/models--owner--name/` holding `refs/`, `snapshots/`, `blobs/`."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


def _read_ref(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if _COMMIT.match(text) else None


def _write_pin(spec: ModelVersionSpec, commit: str) -> None:
    path = pin_ref(spec)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # atomically: several workers may start at once
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(commit)
        os.replace(temporary, path)
    except OSError as exc:  # a read-only cache (e.g. copied to an offline site) still loads, unpinned
        logger.warning(
            "Could not record the checkpoint's revision in %s (%s); set %s=%s to pin it.",
            path,
            exc,
            spec.env_var("REVISION"),
            commit,
        )
        return
    logger.info("Model version %d: pinned %s at revision %s (%s).", spec.version, spec.checkpoint_repo, commit, path)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a replaced file is hashed again
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
