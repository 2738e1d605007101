"""Store a request body in S3 and index it in DynamoDB; read or delete it back.

The object key is the `x-key` header (required). The mode is the `x-mode` header:
- `put` (default when the body is not empty): writes the body to S3 at `objects/<key>` in
  bucket `BUCKET`, then an item `{"pk": {"S": key}, "s3_key": ..., "size": ...,
  "content_type": ..., "invocation_id": ...}` to table `TABLE`; answers 201 with the item.
- `get` (default when the body is empty): reads the item, then the object it points to;
  answers 200 with the body and its content type, or 404.
- `delete`: deletes the object and the item; answers 204.

Host failures answer 503 when the service is unavailable and 502 otherwise (denied,
invalid argument), with a JSON message naming the failed call.
"""

import json
import os

import wit_world
from componentize_py_types import Err
from wit_world.imports import dynamodb, s3, types


class HostFailure(Exception):
    """A host call failed; carries the response to send."""

    def __init__(self, call: str, error: object) -> None:
        super().__init__(call)
        self.call = call
        self.error = error

    def response(self) -> types.Response:
        """503 when unavailable, 502 otherwise."""
        case = type(self.error).__name__.removeprefix("Error_")
        status = 503 if case == "Unavailable" else 502
        detail = getattr(self.error, "value", "")
        return reply(status, {"error": f"{self.call} failed", "case": case, "detail": detail})


def reply(status: int, payload: dict) -> types.Response:
    """A JSON response."""
    return types.Response(
        status=status,
        headers=[("content-type", "application/json")],
        body=json.dumps(payload).encode(),
    )


def header(request: types.Request, name: str) -> str | None:
    """The first value of header `name` (case-insensitive), or None."""
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


def call(name: str, fn, *args):
    """Run one host call, turning its error into HostFailure."""
    try:
        return fn(*args)
    except Err as exc:
        raise HostFailure(name, exc.value) from None


class WitWorld(wit_world.WitWorld):
    """The function's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Dispatch on x-mode."""
        bucket = os.environ.get("BUCKET", "")
        table = os.environ.get("TABLE", "")
        if not bucket or not table:
            return reply(500, {"error": "set BUCKET and TABLE in the function's env"})
        key = header(request, "x-key")
        if not key:
            return reply(400, {"error": "send the object key in the x-key header"})
        mode = header(request, "x-mode") or ("put" if request.body else "get")
        pk = json.dumps({"pk": {"S": key}})
        try:
            if mode == "put":
                return put(request, bucket, table, key)
            if mode == "get":
                return get(bucket, table, pk)
            if mode == "delete":
                item = call("dynamodb.get-item", dynamodb.get_item, table, pk)
                if item is not None:
                    s3_key = json.loads(item)["s3_key"]["S"]
                    call("s3.delete-object", s3.delete_object, bucket, s3_key)
                call("dynamodb.delete-item", dynamodb.delete_item, table, pk)
                return types.Response(status=204, headers=[], body=b"")
        except HostFailure as failure:
            return failure.response()
        return reply(400, {"error": f"unknown x-mode {mode!r}: use put, get or delete"})


def put(request: types.Request, bucket: str, table: str, key: str) -> types.Response:
    """Write the object, then the item that references it."""
    s3_key = f"objects/{key}"
    content_type = header(request, "content-type") or "application/octet-stream"
    call("s3.put-object", s3.put_object, bucket, s3_key, request.body, content_type)
    item = {
        "pk": {"S": key},
        "s3_key": {"S": s3_key},
        "size": {"N": str(len(request.body))},
        "content_type": {"S": content_type},
        "invocation_id": {"S": request.invocation_id},
    }
    call("dynamodb.put-item", dynamodb.put_item, table, json.dumps(item))
    return reply(201, {"item": item})


def get(bucket: str, table: str, pk: str) -> types.Response:
    """Read the item, then the object it points to."""
    item_text = call("dynamodb.get-item", dynamodb.get_item, table, pk)
    if item_text is None:
        return reply(404, {"error": "no such item"})
    item = json.loads(item_text)
    body = call("s3.get-object", s3.get_object, bucket, item["s3_key"]["S"])
    if body is None:
        return reply(404, {"error": "item found but its object is missing", "item": item})
    content_type = item.get("content_type", {}).get("S", "application/octet-stream")
    return types.Response(status=200, headers=[("content-type", content_type)], body=body)
