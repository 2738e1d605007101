"""S3Host and DynamoDbHost against a moto server (integration): every call and error path."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flotilla.hosts.aws import aws_clients
from flotilla.hosts.base import HostError
from flotilla.hosts.dynamodb import DynamoDbHost
from flotilla.hosts.s3 import S3Host
from tests.hosts.conftest import MakeCtx, closed_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clients(aws_endpoint_url: str) -> Iterator[tuple[Any, Any]]:
    s3, dynamodb = aws_clients(
        endpoint_url=aws_endpoint_url, region="us-east-1", max_pool_connections=10
    )
    yield s3, dynamodb
    s3.close()
    dynamodb.close()


@pytest.fixture(scope="module")
def unreachable() -> Iterator[tuple[Any, Any]]:
    s3, dynamodb = aws_clients(
        endpoint_url=f"http://127.0.0.1:{closed_port()}", region="us-east-1", max_pool_connections=2
    )
    yield s3, dynamodb
    s3.close()
    dynamodb.close()


@pytest.fixture
def bucket(clients: tuple[Any, Any], unique: str) -> Iterator[str]:
    s3 = clients[0]
    s3.create_bucket(Bucket=unique)
    yield unique
    for obj in s3.list_objects_v2(Bucket=unique).get("Contents", []):
        s3.delete_object(Bucket=unique, Key=obj["Key"])
    s3.delete_bucket(Bucket=unique)


@pytest.fixture
def table(clients: tuple[Any, Any], unique: str) -> Iterator[str]:
    dynamodb = clients[1]
    dynamodb.create_table(
        TableName=unique,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield unique
    dynamodb.delete_table(TableName=unique)


@pytest.fixture
def s3(clients: tuple[Any, Any]) -> S3Host:
    return S3Host(clients[0], max_object_bytes=1024)


@pytest.fixture
def dynamodb(clients: tuple[Any, Any]) -> DynamoDbHost:
    return DynamoDbHost(clients[1])


def fails(call: Any) -> HostError:
    with pytest.raises(HostError) as info:
        call()
    return info.value


# --- S3 -------------------------------------------------------------------------------------


def test_s3_put_get_delete_round_trip(
    s3: S3Host, clients: tuple[Any, Any], make_ctx: MakeCtx, bucket: str
) -> None:
    ctx = make_ctx(s3_buckets=(bucket,))
    assert s3.get_object(ctx, bucket, "a/b.bin") is None
    s3.put_object(ctx, bucket, "a/b.bin", b"\x00\x01data", "application/x-test")
    assert s3.get_object(ctx, bucket, "a/b.bin") == b"\x00\x01data"
    head = clients[0].head_object(Bucket=bucket, Key="a/b.bin")
    assert head["ContentType"] == "application/x-test"
    s3.put_object(ctx, bucket, "empty", b"", None)
    assert s3.get_object(ctx, bucket, "empty") == b""
    s3.delete_object(ctx, bucket, "a/b.bin")
    assert s3.get_object(ctx, bucket, "a/b.bin") is None
    s3.delete_object(ctx, bucket, "a/b.bin")  # deleting an absent object is fine


def test_s3_bucket_outside_the_config_is_denied(
    s3: S3Host, clients: tuple[Any, Any], make_ctx: MakeCtx, bucket: str
) -> None:
    clients[0].put_object(Bucket=bucket, Key="secret", Body=b"s")
    ctx = make_ctx(s3_buckets=("some-other-bucket",))
    for call in (
        lambda: s3.get_object(ctx, bucket, "secret"),
        lambda: s3.put_object(ctx, bucket, "secret", b"overwrite", None),
        lambda: s3.delete_object(ctx, bucket, "secret"),
    ):
        error = fails(call)
        assert error.case == "denied" and bucket in (error.detail or "")
    assert clients[0].get_object(Bucket=bucket, Key="secret")["Body"].read() == b"s"


def test_s3_limits_are_invalid_argument(
    s3: S3Host, clients: tuple[Any, Any], make_ctx: MakeCtx, bucket: str
) -> None:
    ctx = make_ctx(s3_buckets=(bucket,))
    clients[0].put_object(Bucket=bucket, Key="huge", Body=b"h" * 1025)
    for call in (
        lambda: s3.get_object(ctx, bucket, ""),
        lambda: s3.put_object(ctx, bucket, "k" * 1025, b"", None),
        lambda: s3.put_object(ctx, bucket, "big", b"b" * 1025, None),
        lambda: s3.get_object(ctx, bucket, "huge"),
    ):
        assert fails(call).case == "invalid-argument"
    s3.put_object(ctx, bucket, "fits", b"f" * 1024, None)
    assert s3.get_object(ctx, bucket, "fits") == b"f" * 1024


def test_s3_missing_bucket_in_the_config_is_unavailable(
    s3: S3Host, make_ctx: MakeCtx, unique: str
) -> None:
    ctx = make_ctx(s3_buckets=(f"{unique}-absent",))
    error = fails(lambda: s3.put_object(ctx, f"{unique}-absent", "k", b"v", None))
    assert error.case == "unavailable" and "NoSuchBucket" in (error.detail or "")


def test_s3_unreachable_endpoint_is_unavailable_quickly(
    unreachable: tuple[Any, Any], make_ctx: MakeCtx
) -> None:
    s3 = S3Host(unreachable[0])
    ctx = make_ctx(s3_buckets=("bucket-x",))
    start = time.monotonic()
    assert fails(lambda: s3.get_object(ctx, "bucket-x", "k")).case == "unavailable"
    assert fails(lambda: s3.put_object(ctx, "bucket-x", "k", b"v", None)).case == "unavailable"
    assert time.monotonic() - start < 5.0


def test_s3_deadline_passed_is_unavailable(s3: S3Host, make_ctx: MakeCtx, bucket: str) -> None:
    ctx = make_ctx(seconds=-1, s3_buckets=(bucket,))
    assert fails(lambda: s3.get_object(ctx, bucket, "k")).case == "unavailable"


# --- DynamoDB -------------------------------------------------------------------------------

ITEM = {
    "pk": {"S": "user#1"},
    "n": {"N": "42.5"},
    "b": {"B": "aGVsbG8="},
    "ok": {"BOOL": True},
    "none": {"NULL": True},
    "tags": {"SS": ["a", "b"]},
    "blobs": {"BS": ["AA==", "AQ=="]},
    "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "1"}]}}},
}


def test_dynamodb_put_get_delete_round_trip(
    dynamodb: DynamoDbHost, make_ctx: MakeCtx, table: str
) -> None:
    ctx = make_ctx(dynamodb_tables=(table,))
    key = json.dumps({"pk": {"S": "user#1"}})
    assert dynamodb.get_item(ctx, table, key) is None
    dynamodb.put_item(ctx, table, json.dumps(ITEM))
    got = json.loads(dynamodb.get_item(ctx, table, key) or "null")
    assert {k: v for k, v in got.items() if k not in ("tags", "blobs")} == {
        k: v for k, v in ITEM.items() if k not in ("tags", "blobs")
    }
    assert sorted(got["tags"]["SS"]) == ["a", "b"]
    assert sorted(got["blobs"]["BS"]) == ["AA==", "AQ=="]
    dynamodb.put_item(ctx, table, json.dumps({"pk": {"S": "user#1"}, "v": {"N": "2"}}))
    assert json.loads(dynamodb.get_item(ctx, table, key) or "null") == {
        "pk": {"S": "user#1"},
        "v": {"N": "2"},
    }
    dynamodb.delete_item(ctx, table, key)
    assert dynamodb.get_item(ctx, table, key) is None
    dynamodb.delete_item(ctx, table, key)  # deleting an absent item is fine


def test_dynamodb_table_outside_the_config_is_denied(
    dynamodb: DynamoDbHost, clients: tuple[Any, Any], make_ctx: MakeCtx, table: str
) -> None:
    clients[1].put_item(TableName=table, Item={"pk": {"S": "secret"}})
    ctx = make_ctx(dynamodb_tables=("other-table",))
    key = '{"pk": {"S": "secret"}}'
    for call in (
        lambda: dynamodb.get_item(ctx, table, key),
        lambda: dynamodb.put_item(ctx, table, key),
        lambda: dynamodb.delete_item(ctx, table, key),
    ):
        error = fails(call)
        assert error.case == "denied" and table in (error.detail or "")
    assert "Item" in clients[1].get_item(TableName=table, Key={"pk": {"S": "secret"}})


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "non-empty object"),
        ("{}", "non-empty object"),
        ('{"pk": "user#1"}', "typed value"),
        ('{"pk": {"S": 1}}', "not a DynamoDB value"),
        ('{"pk": {"S": "a", "N": "1"}}', "typed value"),
        ('{"pk": {"X": "a"}}', "not a DynamoDB value"),
        ('{"pk": {"B": "***"}}', "base64"),
        ('{"other": {"S": "x"}}', "ValidationException"),  # not the table's key
    ],
)
def test_dynamodb_invalid_keys_are_invalid_argument(
    dynamodb: DynamoDbHost, make_ctx: MakeCtx, table: str, text: str, detail: str
) -> None:
    ctx = make_ctx(dynamodb_tables=(table,))
    for call in (
        lambda: dynamodb.get_item(ctx, table, text),
        lambda: dynamodb.put_item(ctx, table, text),
    ):
        error = fails(call)
        assert error.case == "invalid-argument", error
        if "Validation" not in detail:
            assert detail in (error.detail or "")


def test_dynamodb_missing_table_in_the_config_is_unavailable(
    dynamodb: DynamoDbHost, make_ctx: MakeCtx, unique: str
) -> None:
    ctx = make_ctx(dynamodb_tables=(f"{unique}-absent",))
    error = fails(lambda: dynamodb.get_item(ctx, f"{unique}-absent", '{"pk": {"S": "a"}}'))
    assert error.case == "unavailable" and "ResourceNotFound" in (error.detail or "")


def test_dynamodb_unreachable_endpoint_is_unavailable_quickly(
    unreachable: tuple[Any, Any], make_ctx: MakeCtx
) -> None:
    dynamodb = DynamoDbHost(unreachable[1])
    ctx = make_ctx(dynamodb_tables=("table-x",))
    start = time.monotonic()
    error = fails(lambda: dynamodb.put_item(ctx, "table-x", '{"pk": {"S": "a"}}'))
    assert error.case == "unavailable" and "unreachable" in (error.detail or "")
    assert time.monotonic() - start < 5.0
