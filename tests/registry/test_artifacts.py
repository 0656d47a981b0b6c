"""Artifact stores: a local folder, and S3 against a real S3-compatible server (moto's, on loopback, from its wheel)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from registry.artifacts import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    LocalArtifactStore,
    S3ArtifactStore,
    content_key,
    open_artifact_store,
    sha256_hex,
)

ADAPTER = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 64  # any bytes do


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


async def roundtrip(store) -> None:
    key = content_key("loras", ADAPTER, ".safetensors")
    ref = await store.put(key, ADAPTER)
    assert ref.sha256 == sha256_hex(ADAPTER) and ref.size == len(ADAPTER)
    assert key.endswith(f"/{ref.sha256}.safetensors") and ref.uri == store.uri_for(key)
    assert await store.get(ref.uri, sha256=ref.sha256) == ADAPTER
    assert (await store.put(key, ADAPTER)) == ref  # content-addressed: a retried upload is the same object
    with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256"):
        await store.get(ref.uri, sha256="0" * 64)
    await store.delete(ref.uri)
    await store.delete(ref.uri)  # already gone: not an error
    with pytest.raises(ArtifactNotFound, match="does not exist"):
        await store.get(ref.uri)


async def test_local_store_roundtrip(tmp_path):
    store = open_artifact_store(str(tmp_path / "artifacts"))
    assert isinstance(store, LocalArtifactStore)
    await roundtrip(store)
    await store.check()
    assert open_artifact_store((tmp_path / "artifacts").as_uri()).folder == store.folder


async def test_local_store_detects_a_changed_file_and_refuses_paths_outside_it(tmp_path):
    store = LocalArtifactStore(tmp_path / "artifacts")
    ref = await store.put("loras/a.safetensors", ADAPTER)
    (tmp_path / "artifacts" / "loras" / "a.safetensors").write_bytes(ADAPTER[:-1] + b"x")
    with pytest.raises(ArtifactIntegrityError):
        await store.get(ref.uri, sha256=ref.sha256)
    (tmp_path / "secret").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        await store.get((tmp_path / "secret").as_uri())
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        await store.get(store.uri_for("loras") + "/../../secret")
    with pytest.raises(ValueError, match="must be relative"):
        await store.put("../escape", b"x")
    with pytest.raises(ArtifactError, match="not a file:// URI"):
        await store.get("s3://bucket/key")


async def test_local_store_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    store = LocalArtifactStore(blocker / "artifacts")
    with pytest.raises(ArtifactStoreUnavailable, match="could not be written in the artifact folder"):
        await store.check()


async def test_s3_store_roundtrip_against_a_real_server(s3_endpoint, s3_credentials):
    store = open_artifact_store("s3://stylecodes-test/artifacts", endpoint_url=s3_endpoint)
    assert isinstance(store, S3ArtifactStore)
    with pytest.raises(ArtifactStoreUnavailable, match="does not exist"):
        await store.check()  # no bucket yet
    await store.ensure_bucket()
    await store.ensure_bucket()  # idempotent
    await store.check()
    await roundtrip(store)
    ref = await store.put("loras/x.safetensors", ADAPTER)
    assert ref.uri == "s3://stylecodes-test/artifacts/loras/x.safetensors"
    head = store.client.head_object(Bucket="stylecodes-test", Key="artifacts/loras/x.safetensors")
    assert head["Metadata"]["sha256"] == ref.sha256
    with pytest.raises(ArtifactError, match="not in this store's bucket"):
        await store.get("s3://other-bucket/artifacts/loras/x.safetensors")
    with pytest.raises(ArtifactError, match="outside this store's prefix"):
        await store.get("s3://stylecodes-test/elsewhere/x")


async def test_s3_store_unreachable_is_a_clear_error(s3_credentials):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3ArtifactStore("bucket", endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=1, max_attempts=1)
    with pytest.raises(ArtifactStoreUnavailable, match="cannot be reached"):
        await store.put("loras/a.safetensors", ADAPTER)
    with pytest.raises(ArtifactStoreUnavailable, match="cannot be reached"):
        await store.get("s3://bucket/loras/a.safetensors")


def test_store_urls():
    with pytest.raises(ValueError, match="names no bucket"):
        open_artifact_store("s3://")
    with pytest.raises(ValueError, match="must be file:///folder"):
        open_artifact_store("ftp://host/x")
