"""Artifact stores: where forged LoRA adapters (and training checkpoints) live, addressed by URI, checked by sha256.

    store = open_artifact_store("file:///var/lib/stylecodes/artifacts")           # the embedded default
    store = open_artifact_store("s3://stylecodes/artifacts", endpoint_url="http://minio:9000")  # at scale
    ref = await store.put(content_key("loras", data, ".safetensors"), data)      # ArtifactRef(uri, sha256, size)
    data = await store.get(ref.uri, sha256=ref.sha256)                           # ArtifactIntegrityError if altered

The registry keeps a style's `ArtifactRef` (URI + sha256); any worker reads it back through the store that the URI
names. Content-addressed keys make uploads idempotent: a retried job writes the same object again, never a second
one. Torch-free and discord-free. S3-compatible storage (AWS S3, MinIO) goes through boto3, in a thread so the
event loop never blocks; credentials come from boto3's usual sources (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).

Errors are `ArtifactError` subclasses whose messages say what failed and where, safe for logs and operators:
`ArtifactNotFound`, `ArtifactIntegrityError` (sha256 mismatch), `ArtifactStoreUnavailable` (unreachable server,
refused credentials, missing bucket, unwritable folder).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from stylecodes.files import write_atomically

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024  # a forged LoRA is a few MB, a checkpoint a few tens


class ArtifactError(Exception):
    """An artifact could not be stored or read; the message says what and where."""


class ArtifactNotFound(ArtifactError):
    pass


class ArtifactIntegrityError(ArtifactError):
    pass


class ArtifactStoreUnavailable(ArtifactError):
    pass


@dataclass(frozen=True)
class ArtifactRef:
    uri: str  # file:///... or s3://bucket/key
    sha256: str
    size: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(prefix: str, data: bytes, suffix: str = "") -> str:
    """`prefix/ab/abcdef...suffix`: the same bytes always get the same key."""
    digest = sha256_hex(data)
    return f"{prefix.strip('/')}/{digest[:2]}/{digest}{suffix}"


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"Artifact key {key!r} must be relative, made of letters, digits, `._-` and `/`.")
    return key


class ArtifactStore(ABC):
    @abstractmethod
    def uri_for(self, key: str) -> str: ...

    @abstractmethod
    async def put(self, key: str, data: bytes) -> ArtifactRef: ...

    @abstractmethod
    async def read(self, uri: str) -> bytes:
        """The bytes at `uri`, unchecked (`get` checks them)."""

    @abstractmethod
    async def delete(self, uri: str) -> None:
        """Remove `uri`; removing what is not there is not an error."""

    @abstractmethod
    async def check(self) -> None:
        """Raise `ArtifactStoreUnavailable` unless the store can be written and read now."""

    async def get(self, uri: str, sha256: str | None = None) -> bytes:
        """The bytes at `uri`; with `sha256`, `ArtifactIntegrityError` unless they hash to it."""
        data = await self.read(uri)
        if sha256 is not None and sha256_hex(data) != sha256.lower():
            raise ArtifactIntegrityError(
                f"{uri} does not match its recorded sha256 ({sha256[:12]}..., read {sha256_hex(data)[:12]}...): "
                "the stored file was changed or damaged. Forge or upload the style again."
            )
        return data


class LocalArtifactStore(ArtifactStore):
    """A folder on this machine (or a shared volume): the embedded default."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser().resolve()

    def uri_for(self, key: str) -> str:
        return (self.folder / check_key(key)).as_uri()

    async def put(self, key: str, data: bytes) -> ArtifactRef:
        path = self.folder / check_key(key)
        await asyncio.to_thread(self._write, path, data)
        return ArtifactRef(path.as_uri(), sha256_hex(data), len(data))

    async def read(self, uri: str) -> bytes:
        path = self._path(uri)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ArtifactNotFound(f"{uri} does not exist in the artifact folder {self.folder}.") from None
        except OSError as exc:
            raise ArtifactStoreUnavailable(f"{uri} could not be read ({exc.strerror or exc}).") from None

    async def delete(self, uri: str) -> None:
        await asyncio.to_thread(self._path(uri).unlink, missing_ok=True)

    async def check(self) -> None:
        await self.put("health/check", b"ok")

    def _path(self, uri: str) -> Path:
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise ArtifactError(f"{uri} is not a file:// URI; this store reads {self.folder.as_uri()}.")
        path = Path(unquote(parts.path)).resolve()
        if not path.is_relative_to(self.folder):
            raise ArtifactError(f"{uri} is outside the artifact folder {self.folder}; it will not be read.")
        return path

    def _write(self, path: Path, data: bytes) -> None:
        try:
            write_atomically(path, data)
        except OSError as exc:
            raise ArtifactStoreUnavailable(
                f"{path} could not be written in the artifact folder {self.folder} ({exc.strerror or exc}). Check "
                "that the folder exists and that this process may write to it (STYLECODES_ARTIFACTS_URL)."
            ) from None


class S3ArtifactStore(ArtifactStore):
    """An S3-compatible bucket (AWS S3, MinIO, ...), through boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        connect_timeout: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.where = f"s3://{bucket}" + (f" at {endpoint_url}" if endpoint_url else "")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(
                    connect_timeout=connect_timeout,
                    read_timeout=60,
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    s3={"addressing_style": "path"},  # MinIO and other self-hosted servers need path-style URLs
                ),
            )
        self.client = client

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    async def put(self, key: str, data: bytes) -> ArtifactRef:
        object_key, digest = self._object_key(key), sha256_hex(data)
        await self._call(
            "put_object",
            f"s3://{self.bucket}/{object_key}",
            Bucket=self.bucket,
            Key=object_key,
            Body=data,
            Metadata={"sha256": digest},
        )
        return ArtifactRef(f"s3://{self.bucket}/{object_key}", digest, len(data))

    async def read(self, uri: str) -> bytes:
        object_key = self._key_of(uri)
        reply = await self._call("get_object", uri, Bucket=self.bucket, Key=object_key)
        size = reply.get("ContentLength") or 0
        if size > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"{uri} is {size / 2**20:.0f} MiB, larger than any artifact this service writes.")
        return await asyncio.to_thread(reply["Body"].read)

    async def delete(self, uri: str) -> None:
        await self._call("delete_object", uri, Bucket=self.bucket, Key=self._key_of(uri))

    async def check(self) -> None:
        await self._call("head_bucket", self.where, Bucket=self.bucket)

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet (first start of a fresh MinIO)."""
        try:
            await self.check()
        except ArtifactStoreUnavailable as exc:
            if "does not exist" not in str(exc):
                raise
            await self._call("create_bucket", self.where, Bucket=self.bucket)

    def _object_key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key_of(self, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or parts.netloc != self.bucket:
            raise ArtifactError(f"{uri} is not in this store's bucket (s3://{self.bucket}/).")
        key = parts.path.lstrip("/")
        if self.prefix and not key.startswith(self.prefix + "/"):
            raise ArtifactError(f"{uri} is outside this store's prefix s3://{self.bucket}/{self.prefix}/.")
        return key

    async def _call(self, operation: str, target: str, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return await asyncio.to_thread(getattr(self.client, operation), **arguments)
        except NoCredentialsError:
            raise ArtifactStoreUnavailable(
                f"No credentials for {self.where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            ) from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound") and operation != "head_bucket":
                raise ArtifactNotFound(f"{target} does not exist.") from None
            if code in ("NoSuchBucket", "404", "NotFound"):
                raise ArtifactStoreUnavailable(f"The bucket of {self.where} does not exist.") from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ArtifactStoreUnavailable(
                    f"{self.where} refused the credentials ({code}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
                ) from None
            raise ArtifactStoreUnavailable(f"{operation} on {target} failed: {code or exc}.") from None
        except BotoCoreError as exc:  # connection refused, DNS, timeouts: the server cannot be reached
            raise ArtifactStoreUnavailable(f"{self.where} cannot be reached ({exc}).") from None


def open_artifact_store(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> ArtifactStore:
    """The store a setting names: `file:///folder`, a plain folder path, or `s3://bucket[/prefix]`."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"{url!r} names no bucket; use s3://bucket or s3://bucket/prefix.")
        return S3ArtifactStore(parts.netloc, parts.path, endpoint_url=endpoint_url, region=region)
    if parts.scheme == "file":
        return LocalArtifactStore(unquote(parts.path))
    if parts.scheme == "" and url:
        return LocalArtifactStore(url)
    raise ValueError(f"Artifact store URL {url!r} must be file:///folder, a folder path, or s3://bucket[/prefix].")
