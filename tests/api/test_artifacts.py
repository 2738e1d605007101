"""Artifact store: content addresses and HMAC refusal, on a directory and on the moto S3 server."""

from __future__ import annotations

import boto3
import pytest

from flotilla.artifacts import (
    HMAC_META,
    ArtifactStore,
    LocalBackend,
    S3Backend,
    artifact_tag,
    sha256_hex,
)
from flotilla.errors import ArtifactError


def test_tag_binds_engine_and_bytes() -> None:
    tag = artifact_tag(b"k", "eng", b"code")
    assert tag == artifact_tag(b"k", "eng", b"code")
    assert tag != artifact_tag(b"k2", "eng", b"code")
    assert tag != artifact_tag(b"k", "eng2", b"code")
    assert tag != artifact_tag(b"k", "eng", b"code!")


def test_empty_key_is_refused(tmp_path) -> None:
    with pytest.raises(ArtifactError):
        ArtifactStore(LocalBackend(tmp_path), "")


def test_local_roundtrip_and_refusals(tmp_path) -> None:
    store = ArtifactStore(LocalBackend(tmp_path), "secret")
    wasm_sha = store.put_component(b"\0asm")
    assert wasm_sha == sha256_hex(b"\0asm")
    assert store.get_component(wasm_sha) == b"\0asm"
    sha = store.put_artifact(b"native", "eng")
    assert store.get_artifact(sha, "eng") == b"native"
    with pytest.raises(ArtifactError, match="engine"):
        store.get_artifact(sha, "other-engine")
    with pytest.raises(ArtifactError, match="HMAC"):
        ArtifactStore(LocalBackend(tmp_path), "other-key").get_artifact(sha, "eng")
    with pytest.raises(ArtifactError, match="not found"):
        store.get_artifact("0" * 64, "eng")
    (tmp_path / "components" / wasm_sha).write_bytes(b"evil")
    with pytest.raises(ArtifactError, match="content address"):
        store.get_component(wasm_sha)


@pytest.mark.integration
def test_s3_creates_bucket_and_refuses_tampered_artifact(aws_endpoint_url: str, unique: str) -> None:
    client = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    store = ArtifactStore(S3Backend(client, unique), "secret")
    sha = store.put_artifact(b"native code", "eng")
    wasm_sha = store.put_component(b"\0asm component")
    assert store.get_artifact(sha, "eng") == b"native code"
    assert store.get_component(wasm_sha) == b"\0asm component"
    assert unique in [b["Name"] for b in client.list_buckets()["Buckets"]]

    # Given an attacker who can write the bucket but does not know the key:
    # same address, same metadata, different bytes.
    head = client.head_object(Bucket=unique, Key=f"artifacts/{sha}")
    client.put_object(
        Bucket=unique, Key=f"artifacts/{sha}", Body=b"native c0de", Metadata=head["Metadata"]
    )
    with pytest.raises(ArtifactError):
        store.get_artifact(sha, "eng")

    # Bytes matching the address but a forged tag are refused by the HMAC check.
    forged = dict(head["Metadata"], **{HMAC_META: artifact_tag(b"guess", "eng", b"evil")})
    evil_sha = sha256_hex(b"evil")
    client.put_object(Bucket=unique, Key=f"artifacts/{evil_sha}", Body=b"evil", Metadata=forged)
    with pytest.raises(ArtifactError, match="HMAC"):
        store.get_artifact(evil_sha, "eng")
