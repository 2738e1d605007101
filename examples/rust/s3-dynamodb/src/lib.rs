//! Store a request body in S3 and index it in DynamoDB; read or delete it back.
//!
//! The object key is the `x-key` header (required). The mode is the `x-mode` header:
//! - `put` (default when the body is not empty): writes the body to S3 at `objects/<key>` in
//!   bucket `BUCKET`, then an item `{"pk": {"S": key}, "s3_key": ..., "size": ...,
//!   "content_type": ..., "invocation_id": ...}` to table `TABLE`; answers 201 with the item.
//! - `get` (default when the body is empty): reads the item, then the object it points to;
//!   answers 200 with the body and its content type, or 404.
//! - `delete`: deletes the object and the item; answers 204.
//!
//! Host failures answer 503 when the service is unavailable and 502 otherwise (denied,
//! invalid argument), with a JSON message naming the failed call.

mod json;

use std::env;

use flotilla::{dynamodb, s3, Request, Response};
use json::Value;

/// A JSON response.
fn reply(status: u16, payload: Value) -> Response {
    Response::json(status, payload.to_string())
}

/// A host call failed: 503 when unavailable, 502 otherwise, naming the call.
fn host_failure(call: &str, case: &str, detail: Option<&str>) -> Response {
    let status = if case == "unavailable" { 503 } else { 502 };
    reply(
        status,
        Value::object([
            ("error", Value::String(format!("{call} failed"))),
            ("case", Value::String(case.into())),
            ("detail", Value::String(detail.unwrap_or_default().into())),
        ]),
    )
}

fn s3_failed(call: &str) -> impl Fn(s3::Error) -> Response + '_ {
    move |e| host_failure(call, e.case(), e.detail())
}

fn dynamodb_failed(call: &str) -> impl Fn(dynamodb::Error) -> Response + '_ {
    move |e| host_failure(call, e.case(), e.detail())
}

/// Dispatch on x-mode.
pub fn handle(request: Request) -> Response {
    let bucket = env::var("BUCKET").unwrap_or_default();
    let table = env::var("TABLE").unwrap_or_default();
    if bucket.is_empty() || table.is_empty() {
        return reply(
            500,
            Value::object([(
                "error",
                Value::String("set BUCKET and TABLE in the function's env".into()),
            )]),
        );
    }
    let Some(key) = request.header("x-key").filter(|k| !k.is_empty()).map(str::to_string) else {
        return reply(
            400,
            Value::object([(
                "error",
                Value::String("send the object key in the x-key header".into()),
            )]),
        );
    };
    let default_mode = if request.body.is_empty() { "get" } else { "put" };
    let mode = request.header("x-mode").unwrap_or(default_mode).to_string();
    let pk = Value::object([("pk", Value::s(key.as_str()))]).to_string();
    let outcome = match mode.as_str() {
        "put" => put(request, &bucket, &table, &key),
        "get" => get(&bucket, &table, &pk),
        "delete" => delete(&bucket, &table, &pk),
        _ => {
            let message = format!("unknown x-mode {mode:?}: use put, get or delete");
            return reply(400, Value::object([("error", Value::String(message))]));
        }
    };
    outcome.unwrap_or_else(|failure| failure)
}

/// Write the object, then the item that references it.
fn put(request: Request, bucket: &str, table: &str, key: &str) -> Result<Response, Response> {
    let s3_key = format!("objects/{key}");
    let content_type =
        request.header("content-type").unwrap_or("application/octet-stream").to_string();
    s3::put_object(bucket, &s3_key, &request.body, Some(&content_type))
        .map_err(s3_failed("s3.put-object"))?;
    let item = Value::object([
        ("pk", Value::s(key)),
        ("s3_key", Value::s(s3_key)),
        ("size", Value::n(request.body.len())),
        ("content_type", Value::s(content_type)),
        ("invocation_id", Value::s(request.invocation_id)),
    ]);
    dynamodb::put_item(table, &item.to_string()).map_err(dynamodb_failed("dynamodb.put-item"))?;
    Ok(reply(201, Value::object([("item", item)])))
}

/// Read the item, then the object it points to.
fn get(bucket: &str, table: &str, pk: &str) -> Result<Response, Response> {
    let Some(text) = dynamodb::get_item(table, pk).map_err(dynamodb_failed("dynamodb.get-item"))?
    else {
        return Ok(reply(404, Value::object([("error", Value::String("no such item".into()))])));
    };
    let item =
        json::parse(&text).map_err(|e| reply(502, Value::object([("error", Value::String(e))])))?;
    let attribute = |name: &str| {
        item.get(name).and_then(|v| v.get("S")).and_then(Value::as_str).map(str::to_string)
    };
    let s3_key = attribute("s3_key").unwrap_or_default();
    let Some(body) = s3::get_object(bucket, &s3_key).map_err(s3_failed("s3.get-object"))? else {
        let message = Value::String("item found but its object is missing".into());
        return Ok(reply(404, Value::object([("error", message), ("item", item.clone())])));
    };
    let content_type =
        attribute("content_type").unwrap_or_else(|| "application/octet-stream".into());
    Ok(Response::new(200).with_header("content-type", content_type).with_body(body))
}

/// Delete the object the item points to, then the item.
fn delete(bucket: &str, table: &str, pk: &str) -> Result<Response, Response> {
    if let Some(text) =
        dynamodb::get_item(table, pk).map_err(dynamodb_failed("dynamodb.get-item"))?
    {
        let item = json::parse(&text)
            .map_err(|e| reply(502, Value::object([("error", Value::String(e))])))?;
        if let Some(s3_key) = item.get("s3_key").and_then(|v| v.get("S")).and_then(Value::as_str) {
            s3::delete_object(bucket, s3_key).map_err(s3_failed("s3.delete-object"))?;
        }
    }
    dynamodb::delete_item(table, pk).map_err(dynamodb_failed("dynamodb.delete-item"))?;
    Ok(Response::new(204))
}

flotilla::export!(handle);
