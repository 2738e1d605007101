"""The `dynamodb` host interface: items in the function's `dynamodb_tables` only.

Keys and items cross the WIT boundary as DynamoDB-JSON text, an object of attribute name to
typed value: `{"pk": {"S": "user#1"}, "n": {"N": "3"}, "b": {"B": "aGk="}}`. The text is
parsed and its shape checked here (`invalid-argument` when it is not JSON, not an object of
typed values, nested deeper than 32 levels or over 400 KiB); binary values (`B`, `BS`) are
base64 in the text and bytes for boto3, both ways. Everything else goes to the low-level
client as-is, so DynamoDB's own validation (key schema, empty sets, number syntax) answers
as `invalid-argument` too.

`put-item-if` sends a condition expression with its expression attribute values
(DynamoDB-JSON text, `{}` for none); a failed condition is `ok(false)`, not an error.

A table outside `dynamodb_tables` is `denied` before any request. `get-item` reads with
ConsistentRead (a function sees its own writes) and returns None for a missing item.
AccessDenied is `denied`; any other service or network failure is `unavailable`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flotilla.hosts import interface as wit
from flotilla.hosts.aws import check_deadline, map_error
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.observe import Meter, Observe

MAX_TEXT_BYTES = 400 * 1024
MAX_DEPTH = 32
MAX_CONDITION_BYTES = 4096
SCALAR_STRING_TYPES = frozenset({"S", "N"})
STRING_SET_TYPES = frozenset({"SS", "NS"})


def parse_attributes(text: str) -> dict[str, Any]:
    """DynamoDB-JSON text to the low-level client's form; ValueError says what is wrong."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ValueError(f"longer than {MAX_TEXT_BYTES} bytes")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    return _attributes(data, "$", 0)


def _attributes(data: Any, path: str, depth: int) -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} must be a non-empty object of attribute name to typed value")
    return {name: _value(value, f"{path}.{name}", depth + 1) for name, value in data.items()}


def _value(value: Any, path: str, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ValueError(f"{path} is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f'{path} must be a typed value like {{"S": "text"}}')
    ((kind, inner),) = value.items()
    if kind in SCALAR_STRING_TYPES and isinstance(inner, str):
        return {kind: inner}
    if kind in STRING_SET_TYPES and _all(inner, str):
        return {kind: inner}
    if kind == "B" and isinstance(inner, str):
        return {kind: _b64(inner, path)}
    if kind == "BS" and _all(inner, str):
        return {kind: [_b64(item, path) for item in inner]}
    if kind == "BOOL" and isinstance(inner, bool):
        return {kind: inner}
    if kind == "NULL" and inner is True:
        return {kind: True}
    if kind == "L" and isinstance(inner, list):
        return {kind: [_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(inner)]}
    if kind == "M" and isinstance(inner, dict):
        return {kind: {k: _value(v, f"{path}.{k}", depth + 1) for k, v in inner.items()}}
    raise ValueError(f"{path}: {kind!r} with a {type(inner).__name__} is not a DynamoDB value")


def _all(items: Any, kind: type) -> bool:
    return isinstance(items, list) and all(isinstance(item, kind) for item in items)


def _b64(text: str, path: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{path} is not valid base64") from None


def dump_attributes(item: dict[str, Any]) -> str:
    """The low-level client's item as DynamoDB-JSON text (bytes as base64)."""
    return json.dumps(_plain(item), separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, set, tuple)):
        return [_plain(v) for v in value]
    return value


class DynamoDbHost:
    """The guest's DynamoDB calls on one shared boto3 client; thread-safe."""

    def __init__(self, client: Any, *, observe: Observe | None = None) -> None:
        self.client = client
        self._meter = Meter("dynamodb", observe)

    def get_item(self, ctx: InvocationContext, table: str, key: str) -> str | None:
        """The item as DynamoDB-JSON text, or None when it does not exist."""
        with self._meter.measure("get_item"):
            parsed = self._check(ctx, table, key, "key")
            try:
                response = self.client.get_item(TableName=table, Key=parsed, ConsistentRead=True)
            except Exception as exc:  # noqa: BLE001 - botocore failures become WIT cases
                raise map_error("dynamodb", exc) from None
            item = response.get("Item")
            return None if item is None else dump_attributes(item)

    def put_item(self, ctx: InvocationContext, table: str, item: str) -> None:
        """Write the item, replacing any item with the same key."""
        with self._meter.measure("put_item"):
            parsed = self._check(ctx, table, item, "item")
            try:
                self.client.put_item(TableName=table, Item=parsed)
            except Exception as exc:  # noqa: BLE001 - botocore failures become WIT cases
                raise map_error("dynamodb", exc) from None

    def put_item_if(
        self, ctx: InvocationContext, table: str, item: str, condition: str, values: str
    ) -> bool:
        """Write the item only when `condition` holds; False when it did not."""
        with self._meter.measure("put_item_if"):
            parsed = self._check(ctx, table, item, "item")
            if not condition.strip() or len(condition) > MAX_CONDITION_BYTES:
                raise HostError(
                    "invalid-argument",
                    f"condition must be a non-empty expression of at most "
                    f"{MAX_CONDITION_BYTES} bytes",
                )
            request: dict[str, Any] = {
                "TableName": table, "Item": parsed, "ConditionExpression": condition
            }
            if values.strip() not in ("", "{}"):
                try:
                    request["ExpressionAttributeValues"] = parse_attributes(values)
                except ValueError as exc:
                    raise HostError(
                        "invalid-argument", f"values are not DynamoDB-JSON: {exc}"
                    ) from None
            try:
                self.client.put_item(**request)
            except Exception as exc:  # noqa: BLE001 - botocore failures become WIT cases
                if getattr(exc, "response", {}).get("Error", {}).get("Code") == \
                        "ConditionalCheckFailedException":
                    return False
                raise map_error("dynamodb", exc) from None
            return True

    def delete_item(self, ctx: InvocationContext, table: str, key: str) -> None:
        """Delete the item by key; deleting an absent item is not an error."""
        with self._meter.measure("delete_item"):
            parsed = self._check(ctx, table, key, "key")
            try:
                self.client.delete_item(TableName=table, Key=parsed)
            except Exception as exc:  # noqa: BLE001 - botocore failures become WIT cases
                raise map_error("dynamodb", exc) from None

    def _check(self, ctx: InvocationContext, table: str, text: str, what: str) -> dict[str, Any]:
        if table not in ctx.config.dynamodb_tables:
            raise HostError("denied", f"table {table!r} is not in the function's dynamodb_tables")
        try:
            parsed = parse_attributes(text)
        except ValueError as exc:
            raise HostError("invalid-argument", f"{what} is not DynamoDB-JSON: {exc}") from None
        check_deadline(ctx)
        return parsed


# ---- the WIT interface ----------------------------------------------------------------------


def _get(host: DynamoDbHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    return wit.ok(wit.opt_string(host.get_item(ctx, wit.arg_string(a, 0), wit.arg_string(a, 1))))


def _put(host: DynamoDbHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.put_item(ctx, wit.arg_string(a, 0), wit.arg_string(a, 1))
    return wit.ok()


def _put_if(host: DynamoDbHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    table, item = wit.arg_string(a, 0), wit.arg_string(a, 1)
    condition, values = wit.arg_string(a, 2), wit.arg_string(a, 3)
    return wit.ok_bool(host.put_item_if(ctx, table, item, condition, values))


def _delete(host: DynamoDbHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.delete_item(ctx, wit.arg_string(a, 0), wit.arg_string(a, 1))
    return wit.ok()


INTERFACE = wit.Interface(
    "dynamodb",
    (
        wit.HostFunc("get-item", _get),
        wit.HostFunc("put-item", _put),
        wit.HostFunc("delete-item", _delete),
        wit.HostFunc("put-item-if", _put_if),
    ),
    errors={"denied": True, "unavailable": True, "invalid-argument": True},
    client="dynamodb",
)
