"""Content-addressed store of components and compiled artifacts, with HMAC-authenticated artifacts.

Layout (keys inside one bucket or directory):

- `components/<sha256 of the wasm>`: the component as uploaded;
- `artifacts/<sha256 of the artifact>`: a serialized (natively compiled) component, with
  its tag in the object metadata `flotilla-hmac` and the engine fingerprint it was compiled
  for in `flotilla-engine`.

A compiled artifact is native code that wasmtime loads without validation, so a reader must
never trust the bytes alone: the tag is HMAC-SHA256(key, engine_fingerprint + "\\n" + sha256 +
"\\n" + artifact) and `get_artifact` recomputes it, checks the content address and the
engine fingerprint, and raises `ArtifactError` on any mismatch. Components are validated by
the sandbox before compiling, so they only need their content address checked.

Backends: `S3Backend` (boto3, used by the fleet) and `LocalBackend` (a directory, for dev
mode). The store is blocking; async callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flotilla.errors import ArtifactError

HMAC_META = "flotilla-hmac"
ENGINE_META = "flotilla-engine"


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of `data` (the content address)."""
    return hashlib.sha256(data).hexdigest()


def artifact_tag(key: bytes, engine_fingerprint: str, artifact: bytes) -> str:
    """HMAC-SHA256 tag binding an artifact to its engine fingerprint and content address."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(engine_fingerprint.encode("utf-8") + b"\n")
    mac.update(sha256_hex(artifact).encode("ascii") + b"\n")
    mac.update(artifact)
    return mac.hexdigest()


@dataclass(frozen=True)
class StoredObject:
    """Bytes plus string metadata, as a backend returns them."""

    data: bytes
    metadata: dict[str, str]


class Backend(Protocol):
    """Where the bytes live; keys are relative paths like `artifacts/<sha>`."""

    def put(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        """Write (or overwrite) one object."""

    def get(self, key: str) -> StoredObject | None:
        """Read one object; None when absent."""

    def exists(self, key: str) -> bool:
        """True when the object exists."""


class S3Backend:
    """Objects in one S3 bucket (created on first use when missing)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self._bucket_ready = False

    @classmethod
    def from_settings(
        cls, *, bucket: str, endpoint_url: str | None, region: str
    ) -> S3Backend:
        """A backend with its own boto3 client (thread-safe, pooled)."""
        import boto3  # imported here so dev mode and unit tests need no AWS setup

        client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        return cls(client, bucket)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet (idempotent)."""
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ready = True

    def put(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        """Write one object with user metadata."""
        self.ensure_bucket()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata)

    def get(self, key: str) -> StoredObject | None:
        """Read one object; None when the key (or the bucket) does not exist."""
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchBucket", "404"):
                return None
            raise
        return StoredObject(obj["Body"].read(), dict(obj.get("Metadata") or {}))

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True


class LocalBackend:
    """Objects as files under a directory (dev mode); metadata in a `.meta` sidecar."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if ".." in key.split("/"):
            raise ValueError(f"bad key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        """Write one object atomically (temp file + rename)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = "".join(f"{k}={v}\n" for k, v in sorted(metadata.items())).encode()
        for target, content in ((path.with_suffix(".meta"), meta), (path, data)):
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, target)

    def get(self, key: str) -> StoredObject | None:
        """Read one object; None when absent."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        metadata: dict[str, str] = {}
        meta_path = path.with_suffix(".meta")
        if meta_path.exists():
            for line in meta_path.read_text().splitlines():
                k, _, v = line.partition("=")
                metadata[k] = v
        return StoredObject(data, metadata)

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        return self._path(key).exists()


class ArtifactStore:
    """Components and HMAC-tagged compiled artifacts, addressed by SHA-256.

    Read API for workers: `get_component(wasm_sha256)` and
    `get_artifact(artifact_sha256, engine_fingerprint)`, both verified, both raising
    `ArtifactError` when the object is missing or does not verify.
    """

    def __init__(self, backend: Backend, key: str | bytes) -> None:
        if not key:
            raise ArtifactError("an artifact key is required (settings.artifact_key)")
        self.backend = backend
        self.key = key.encode("utf-8") if isinstance(key, str) else key

    def put_component(self, wasm: bytes) -> str:
        """Store a component (idempotent); return its sha256."""
        sha = sha256_hex(wasm)
        key = f"components/{sha}"
        if not self.backend.exists(key):
            self.backend.put(key, wasm, {})
        return sha

    def get_component(self, wasm_sha256: str) -> bytes:
        """The component with that sha256; ArtifactError when missing or corrupt."""
        obj = self.backend.get(f"components/{wasm_sha256}")
        if obj is None:
            raise ArtifactError(f"component {wasm_sha256} not found in the artifact store")
        if sha256_hex(obj.data) != wasm_sha256:
            raise ArtifactError(f"component {wasm_sha256} does not match its content address")
        return obj.data

    def put_artifact(self, artifact: bytes, engine_fingerprint: str) -> str:
        """Store a compiled artifact with its HMAC tag; return its sha256."""
        sha = sha256_hex(artifact)
        tag = artifact_tag(self.key, engine_fingerprint, artifact)
        self.backend.put(
            f"artifacts/{sha}", artifact, {HMAC_META: tag, ENGINE_META: engine_fingerprint}
        )
        return sha

    def get_artifact(self, artifact_sha256: str, engine_fingerprint: str) -> bytes:
        """The verified artifact; ArtifactError when missing, tampered with or for another engine."""
        obj = self.backend.get(f"artifacts/{artifact_sha256}")
        if obj is None:
            raise ArtifactError(f"artifact {artifact_sha256} not found in the artifact store")
        stored_engine = obj.metadata.get(ENGINE_META, "")
        if stored_engine != engine_fingerprint:
            raise ArtifactError(
                f"artifact {artifact_sha256} was compiled for engine {stored_engine!r}, "
                f"not {engine_fingerprint!r}"
            )
        if sha256_hex(obj.data) != artifact_sha256:
            raise ArtifactError(f"artifact {artifact_sha256} does not match its content address")
        expected = artifact_tag(self.key, engine_fingerprint, obj.data)
        if not hmac.compare_digest(expected, obj.metadata.get(HMAC_META, "")):
            raise ArtifactError(f"artifact {artifact_sha256} failed HMAC verification; refusing it")
        return obj.data
