"""Version 1's checkpoint from the Hub: picked from the repo's listing, pinned to a commit, fingerprinted, checked.

No network: the Hub is a Hugging Face cache folder built here in huggingface_hub's own layout (blobs named by their
sha256, snapshots of symlinks, refs; `scan_cache_dir` reads it back), plus a stand-in for `HfApi.model_info`, the
one call that lists a repo online. `hf_hub_download` is the real one: at a commit hash, it returns a cached file
without any request (and any request would fail at once: the endpoint is a closed local port).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from stylecodes import engine as engine_module
from stylecodes import hub, loaders
from stylecodes.checkpoint import CheckpointError
from stylecodes.engine import StyleEngine
from stylecodes.models.sd15 import SD15_UNET_CONFIG
from stylecodes.versions import VERSIONS

REPO = "CiaraRowles/stylecodes"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
SPEC = VERSIONS[1]


class FakeHub:
    """A Hugging Face cache for `REPO`, and what the Hub's listing says (`main`'s commit and its files)."""

    def __init__(self, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cache = cache
        self.folder = cache / ("models--" + REPO.replace("/", "--"))
        self.hub: dict[str, list[str]] = {}  # commit -> files; "main" -> the commit main points at
        self.listed: list[str | None] = []  # the revisions model_info was asked for
        monkeypatch.setattr("huggingface_hub.HfApi.model_info", self._model_info)

    def cache_files(
        self, commit: str, files: dict[str, bytes], *, ref: str | None = "main", blob_sha: str = ""
    ) -> None:
        """Put `files` into the cache as huggingface_hub does (blob named by its sha256, snapshot symlink)."""
        for name, data in files.items():
            blob = self.folder / "blobs" / (blob_sha or hashlib.sha256(data).hexdigest())
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = self.folder / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        if ref is not None:
            (self.folder / "refs").mkdir(parents=True, exist_ok=True)
            (self.folder / "refs" / ref).write_text(commit)

    def publish(self, commit: str, files: list[str]) -> None:
        """The Hub's `main` is now `commit`, holding `files`."""
        self.hub[commit] = [".gitattributes", "README.md", *files]
        self.hub["main"] = commit  # type: ignore[assignment]

    def _model_info(self, repo_id: str, *, revision: str | None = None, **kwargs):
        import httpx
        from huggingface_hub.errors import RevisionNotFoundError
        from huggingface_hub.hf_api import ModelInfo

        assert repo_id == REPO
        self.listed.append(revision)
        commit = self.hub.get("main") if revision in (None, "main") else revision
        if commit not in self.hub:  # what the Hub answers (huggingface_hub turns the 404 into this error)
            request = httpx.Request("GET", f"https://huggingface.co/api/models/{REPO}/revision/{revision}")
            response = httpx.Response(404, request=request, headers={"X-Error-Code": "RevisionNotFound"})
            raise RevisionNotFoundError(f"404 Client Error. Invalid rev id: {revision}", response=response)
        return ModelInfo(id=REPO, sha=commit, siblings=[{"rfilename": name} for name in self.hub[commit]])


@pytest.fixture
def fake_hub(monkeypatch, tmp_path) -> FakeHub:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a stray request fails at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("BASE_MODEL", "CHECKPOINT", "IMAGE_ENCODER", "CHECKPOINT_FILE", "REVISION"):
        monkeypatch.delenv(SPEC.env_var(name), raising=False)
    return FakeHub(tmp_path / "hf-cache", monkeypatch)


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# --------------------------------------------------------------------------------------------- picking the file


@pytest.mark.parametrize("name", [*SPEC.checkpoint_files, "models/controlnet_model_11_80000.bin"])
def test_each_known_name_is_found_and_its_commit_pinned(fake_hub, name):
    fake_hub.publish(COMMIT_A, [name, "examples/cat.png"])
    fake_hub.cache_files(COMMIT_A, {name: b"weights"}, ref=None)  # downloaded before (a download needs the Hub)
    resolved = hub.resolve_checkpoint(SPEC)
    assert (resolved.repo, resolved.filename, resolved.revision) == (REPO, name, COMMIT_A)
    assert resolved.path == fake_hub.folder / "snapshots" / COMMIT_A / name and resolved.path.read_bytes() == b"weights"
    assert resolved.source == f"hf://{REPO}/{name}"
    assert fake_hub.listed == [None]  # listed once, at the default branch
    assert hub.pin_ref(SPEC).read_text() == COMMIT_A


def test_several_candidates_list_the_repo_and_name_the_setting(fake_hub, monkeypatch):
    files = ["controlnet_model_11_80000.bin", "stylecodes_sd15_v1.bin"]
    fake_hub.publish(COMMIT_A, files)
    fake_hub.cache_files(COMMIT_A, {name: name.encode() for name in files}, ref=None)
    with pytest.raises(hub.ModelLoadError) as error:
        hub.resolve_checkpoint(SPEC)
    message = str(error.value)
    assert f"{REPO} at revision {COMMIT_A} has several checkpoint files" in message
    assert "It holds: .gitattributes, README.md, controlnet_model_11_80000.bin, stylecodes_sd15_v1.bin." in message
    assert "Set STYLECODES_V1_CHECKPOINT_FILE to the file to use" in message
    assert "or STYLECODES_V1_CHECKPOINT to a local checkpoint file" in message
    assert not hub.pin_ref(SPEC).exists()  # nothing was chosen, nothing pinned

    monkeypatch.setenv("STYLECODES_V1_CHECKPOINT_FILE", "stylecodes_sd15_v1.bin")
    assert hub.resolve_checkpoint(SPEC).path.read_bytes() == b"stylecodes_sd15_v1.bin"


def test_no_candidate_lists_the_repo(fake_hub, monkeypatch):
    fake_hub.publish(COMMIT_A, ["weights/model.pt"])
    with pytest.raises(hub.ModelLoadError, match=r"has none of the known checkpoint files \(controlnet_model_11_80000"):
        hub.resolve_checkpoint(SPEC)
    monkeypatch.setenv("STYLECODES_V1_CHECKPOINT_FILE", "weights/model.bin")
    with pytest.raises(hub.ModelLoadError, match=r"has no file `weights/model.bin` \(set by .*It holds: .*model.pt"):
        hub.resolve_checkpoint(SPEC)


def test_a_bin_and_its_safetensors_are_one_checkpoint(fake_hub):
    files = ["stylecodes_sd15_v1.bin", "stylecodes_sd15_v1.safetensors"]
    fake_hub.publish(COMMIT_A, files)
    fake_hub.cache_files(COMMIT_A, {"stylecodes_sd15_v1.safetensors": b"safe"}, ref=None)
    assert hub.resolve_checkpoint(SPEC).filename == "stylecodes_sd15_v1.safetensors"  # the format without pickles


# -------------------------------------------------------------------------------------------- revisions, offline


def test_offline_resolves_from_the_cache_and_pins(fake_hub, offline):
    fake_hub.cache_files(COMMIT_A, {"stylecodes_sd15_v1.bin": b"w", "README.md": b"r"})
    resolved = hub.resolve_checkpoint(SPEC)
    assert (resolved.filename, resolved.revision) == ("stylecodes_sd15_v1.bin", COMMIT_A)
    assert fake_hub.listed == []  # no Hub call at all
    assert hub.pin_ref(SPEC).read_text() == COMMIT_A


def test_offline_lists_what_the_cache_holds_when_nothing_fits(fake_hub, offline):
    fake_hub.cache_files(COMMIT_A, {"README.md": b"r"})
    with pytest.raises(hub.ModelLoadError, match=r"the local Hugging Face cache of .* has none of the known.*README"):
        hub.resolve_checkpoint(SPEC)


def test_the_pinned_commit_stays_when_the_hub_moves(fake_hub):
    from huggingface_hub import scan_cache_dir

    fake_hub.publish(COMMIT_A, ["controlnet_model_11_80000.bin"])
    fake_hub.cache_files(COMMIT_A, {"controlnet_model_11_80000.bin": b"first"}, ref=None)
    assert hub.resolve_checkpoint(SPEC).revision == COMMIT_A
    fake_hub.publish(COMMIT_B, ["controlnet_model_11_80000.bin"])  # a new upload to main
    fake_hub.cache_files(COMMIT_B, {"controlnet_model_11_80000.bin": b"second"}, ref="main")
    again = hub.resolve_checkpoint(SPEC)
    assert (again.revision, again.path.read_bytes()) == (COMMIT_A, b"first")
    assert fake_hub.listed == [None]  # the pinned, cached commit needs no listing
    # huggingface_hub reads the cache back: the pin is an ordinary ref of the pinned revision
    [repo] = scan_cache_dir(fake_hub.cache).repos
    refs = {revision.commit_hash: set(revision.refs) for revision in repo.revisions}
    assert refs == {COMMIT_A: {"stylecodes-v1"}, COMMIT_B: {"main"}}


def test_an_explicit_revision_wins_and_leaves_the_pin(fake_hub, monkeypatch):
    fake_hub.publish(COMMIT_A, ["controlnet_model_11_80000.bin"])
    fake_hub.cache_files(COMMIT_A, {"controlnet_model_11_80000.bin": b"first"}, ref=None)
    hub.resolve_checkpoint(SPEC)
    fake_hub.publish(COMMIT_B, ["stylecodes_sd15_v1.safetensors"])
    fake_hub.cache_files(COMMIT_B, {"stylecodes_sd15_v1.safetensors": b"second"}, ref=None)
    monkeypatch.setenv("STYLECODES_V1_REVISION", "main")
    assert hub.resolve_checkpoint(SPEC).path.read_bytes() == b"second"
    assert fake_hub.listed == [None, "main"] and hub.pin_ref(SPEC).read_text() == COMMIT_A
    monkeypatch.setenv("STYLECODES_V1_REVISION", "v9")
    with pytest.raises(hub.ModelLoadError, match=rf"{REPO} at revision v9 .*RevisionNotFoundError: .*rev id: v9"):
        hub.resolve_checkpoint(SPEC)


def test_unreachable_hub_falls_back_to_the_cached_branch(fake_hub, monkeypatch, caplog):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", unreachable)
    fake_hub.cache_files(COMMIT_A, {"controlnet_model_11_80000.safetensors": b"w"})
    assert hub.resolve_checkpoint(SPEC).revision == COMMIT_A
    assert "Could not list CiaraRowles/stylecodes on the Hugging Face Hub (ConnectionError)" in caplog.text


# ----------------------------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_the_file_sha256_and_catches_a_damaged_download(fake_hub):
    data = b"the whole checkpoint" * 1000
    fake_hub.publish(COMMIT_A, ["controlnet_model_11_80000.bin"])
    fake_hub.cache_files(COMMIT_A, {"controlnet_model_11_80000.bin": data}, ref=None)
    resolved = hub.resolve_checkpoint(SPEC)
    expected = hub.ModelFingerprint(
        hashlib.sha256(data).hexdigest(), f"hf://{REPO}/controlnet_model_11_80000.bin", COMMIT_A
    )
    assert hub.fingerprint(SPEC, resolved) == expected
    assert json.loads(json.dumps(expected.as_metadata())) == {
        "sha256": expected.sha256,
        "source": expected.source,
        "revision": COMMIT_A,
    }

    # An interrupted download: the blob is named by the Hub's sha256 but holds less.
    fake_hub.cache_files(COMMIT_B, {"stylecodes_sd15_v1.bin": data[:100]}, ref=None, blob_sha=expected.sha256)
    broken = hub.ResolvedCheckpoint(
        fake_hub.folder / "snapshots" / COMMIT_B / "stylecodes_sd15_v1.bin", REPO, "stylecodes_sd15_v1.bin", COMMIT_B
    )
    with pytest.raises(hub.ModelLoadError) as error:
        hub.fingerprint(SPEC, broken)
    message = str(error.value)
    assert f"{REPO}/stylecodes_sd15_v1.bin at revision {COMMIT_B}" in message and "is damaged" in message
    assert f"hf download {REPO} stylecodes_sd15_v1.bin --revision {COMMIT_B} --force-download" in message


def test_sha256_is_computed_again_when_the_file_changes(tmp_path):
    path = tmp_path / "local.safetensors"
    path.write_bytes(b"one")
    assert hub.file_sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"three")  # another size (and modification time): not the remembered hash
    assert hub.file_sha256(path) == hashlib.sha256(b"three").hexdigest()


# ------------------------------------------------- the resolved file through the real loader (tiny published model)


def _cached_published_model(fake_hub, monkeypatch, published_files, files: dict[str, bytes], **cache) -> None:
    """Version 1's tiny stand-in with its checkpoint only in the Hub cache (base and SigLIP local), offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    spec = published_files.spec
    for name in ("CHECKPOINT", "CHECKPOINT_FILE", "REVISION"):
        monkeypatch.delenv(spec.env_var(name), raising=False)
    monkeypatch.setenv(spec.env_var("BASE_MODEL"), str(published_files.base_folder))
    monkeypatch.setenv(spec.env_var("IMAGE_ENCODER"), str(published_files.siglip_folder))
    fake_hub.cache_files(COMMIT_A, files, **cache)


def test_offline_cache_loads_the_published_model_with_its_fingerprint(fake_hub, monkeypatch, published_files):
    data = published_files.checkpoint_bin.read_bytes()
    _cached_published_model(fake_hub, monkeypatch, published_files, {"controlnet_model_11_80000.bin": data})
    pipeline, _, fingerprint = loaders.load_model(published_files.spec)
    assert fingerprint == hub.ModelFingerprint(
        hashlib.sha256(data).hexdigest(), f"hf://{REPO}/controlnet_model_11_80000.bin", COMMIT_A
    )
    from safetensors.torch import load_file

    expected = load_file(str(published_files.checkpoint_safetensors))
    assert all(torch.equal(value, expected[key]) for key, value in pipeline.control_model.state_dict().items())


def _not_a_checkpoint(published_files) -> bytes:
    return b"<!DOCTYPE html><title>Sign in</title>"  # what a proxy's login page saved as the file looks like


def _truncated(published_files) -> bytes:
    data = published_files.checkpoint_bin.read_bytes()
    return data[: len(data) // 2]


def _more_than_tensors(published_files) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    torch.save({"controlnet": {"weight": torch.ones(2)}, "optimizer": _Optimizer()}, buffer)
    return buffer.getvalue()


def _wrong_layout(published_files) -> bytes:
    from io import BytesIO

    from safetensors.torch import load_file

    state_dict = load_file(str(published_files.checkpoint_safetensors))
    del state_dict["middle_block_out.bias"]
    buffer = BytesIO()
    torch.save({"controlnet": state_dict}, buffer)
    return buffer.getvalue()


class _Optimizer:
    pass


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_not_a_checkpoint, "is a text file, not a checkpoint (it begins `<!DOCTYPE html>"),
        (_truncated, "is truncated or not a torch checkpoint"),
        (_more_than_tensors, "the pickle contains more than tensors"),
        (_wrong_layout, "1 missing key(s), e.g. `middle_block_out.bias`"),
    ],
)
def test_a_bad_checkpoint_is_reported_before_the_base_model_or_a_gpu(
    fake_hub, monkeypatch, published_files, make, problem
):
    _cached_published_model(fake_hub, monkeypatch, published_files, {"stylecodes_sd15_v1.bin": make(published_files)})

    def no_base(*args, **kwargs):
        raise AssertionError("the base model was loaded before the checkpoint was checked")

    monkeypatch.setattr(loaders, "load_base_components", no_base)
    monkeypatch.setattr(engine_module, "get_spec", lambda version: published_files.spec)
    with pytest.raises(CheckpointError) as error:
        StyleEngine.load(1, device="cuda")  # (there is no GPU here: reaching it would raise something else)
    message = str(error.value)
    assert problem in message and "stylecodes_sd15_v1.bin" in message
    assert f"hf download {REPO} stylecodes_sd15_v1.bin --revision {COMMIT_A} --force-download" in message
    assert "STYLECODES_TEST_V1_CHECKPOINT_FILE" in message


def test_an_sd15_base_needs_exactly_the_published_517_keys(reference_dir, tmp_path):
    manifest = {}
    for line in (reference_dir / "sd15_v1_checkpoint_keys.tsv").read_text().splitlines():
        name, shape, _ = line.split("\t")
        manifest[name] = tuple(int(size) for size in shape.strip("()").split(",") if size.strip())
    base = tmp_path / "sd15"
    (base / "unet").mkdir(parents=True)
    (base / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **SD15_UNET_CONFIG}))
    source = hub.BaseModelSource(base, is_single_file=False, label="sd15")
    layout = loaders._control_layout(SPEC, source, autoencoder_input_dim=768)  # SigLIP-base's width
    assert len(manifest) == 517
    assert {name: tuple(tensor.shape) for name, tensor in layout.state_dict().items()} == manifest
