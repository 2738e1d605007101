"""Unit tables for DynamoDB-JSON parsing and dumping, and the AWS error mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from flotilla.hosts.aws import map_error
from flotilla.hosts.dynamodb import MAX_DEPTH, dump_attributes, parse_attributes


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('{"pk": {"S": "user#1"}}', {"pk": {"S": "user#1"}}),
        ('{"n": {"N": "1e3"}}', {"n": {"N": "1e3"}}),
        ('{"b": {"B": "aGk="}}', {"b": {"B": b"hi"}}),
        ('{"bs": {"BS": ["aGk=", ""]}}', {"bs": {"BS": [b"hi", b""]}}),
        (
            '{"s": {"SS": ["a"]}, "ns": {"NS": ["1", "2"]}}',
            {"s": {"SS": ["a"]}, "ns": {"NS": ["1", "2"]}},
        ),
        (
            '{"t": {"BOOL": false}, "z": {"NULL": true}}',
            {"t": {"BOOL": False}, "z": {"NULL": True}},
        ),
        ('{"l": {"L": [{"B": "AA=="}, {"M": {}}]}}', {"l": {"L": [{"B": b"\x00"}, {"M": {}}]}}),
        ('{"m": {"M": {"x": {"S": "y"}}}}', {"m": {"M": {"x": {"S": "y"}}}}),
    ],
)
def test_parse_attributes(text: str, parsed: dict[str, Any]) -> None:
    assert parse_attributes(text) == parsed


def _nested(depth: int) -> str:
    value: Any = {"S": "leaf"}
    for _ in range(depth):
        value = {"L": [value]}
    return json.dumps({"a": value})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("null", "non-empty object"),
        ('"text"', "non-empty object"),
        ("[1]", "non-empty object"),
        ("{}", "non-empty object"),
        ('{"a": 1}', "typed value"),
        ('{"a": {}}', "typed value"),
        ('{"a": {"S": "x", "N": "1"}}', "typed value"),
        ('{"a": {"S": null}}', "not a DynamoDB value"),
        ('{"a": {"N": 1}}', "not a DynamoDB value"),
        ('{"a": {"BOOL": "true"}}', "not a DynamoDB value"),
        ('{"a": {"NULL": false}}', "not a DynamoDB value"),
        ('{"a": {"SS": "x"}}', "not a DynamoDB value"),
        ('{"a": {"NS": [1]}}', "not a DynamoDB value"),
        ('{"a": {"L": {}}}', "not a DynamoDB value"),
        ('{"a": {"M": []}}', "not a DynamoDB value"),
        ('{"a": {"M": {"b": {"Q": 1}}}}', "$.a.b"),
        ('{"a": {"B": "not base64!"}}', "base64"),
        ('{"a": {"BS": ["AA==", "%%%"]}}', "base64"),
        (_nested(MAX_DEPTH + 1), "deeper"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('{"a": ' * 5000 + "1" + "}" * 5000, "not valid JSON"),
        (json.dumps({"a": {"S": "x" * 410_000}}), "longer"),
    ],
)
def test_parse_attributes_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("$", r"\$")):
        parse_attributes(text)


def test_nesting_at_the_limit_is_fine() -> None:
    assert parse_attributes(_nested(MAX_DEPTH - 1))


def test_dump_attributes_encodes_bytes_and_round_trips() -> None:
    item = {
        "b": {"B": b"hi"},
        "bs": {"BS": [b"\x00"]},
        "l": {"L": [{"B": b"\xff"}]},
        "s": {"S": "é"},
    }
    text = dump_attributes(item)
    assert json.loads(text) == {
        "b": {"B": "aGk="},
        "bs": {"BS": ["AA=="]},
        "l": {"L": [{"B": "/w=="}]},
        "s": {"S": "é"},
    }
    assert parse_attributes(text) == item


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "msg"}}, "Op")


@pytest.mark.parametrize(
    ("exc", "case"),
    [
        (_client_error("AccessDenied"), "denied"),
        (_client_error("AccessDeniedException"), "denied"),
        (_client_error("UnrecognizedClientException"), "denied"),
        (_client_error("ValidationException"), "invalid-argument"),
        (_client_error("InvalidArgument"), "invalid-argument"),
        (_client_error("ResourceNotFoundException"), "unavailable"),
        (_client_error("NoSuchBucket"), "unavailable"),
        (_client_error("ProvisionedThroughputExceededException"), "unavailable"),
        (_client_error("InternalError"), "unavailable"),
        (ParamValidationError(report="bad"), "invalid-argument"),
        (EndpointConnectionError(endpoint_url="http://x"), "unavailable"),
        (RuntimeError("boom"), "unavailable"),
    ],
)
def test_map_error(exc: Exception, case: str) -> None:
    error = map_error("svc", exc)
    assert error.case == case and (error.detail or "").startswith("svc")
