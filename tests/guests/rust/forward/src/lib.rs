//! Test guest: forwards the request's headers (all but `op` and `to`) and body through the
//! host calls that take a header list (`http.invoke`, `spawn.job`), so lowered
//! `list<tuple<string, string>>` values are checked. Host errors cross with `?` and become
//! the handler's `err(string)`.

use std::error::Error;

use flotilla::{http, spawn, Request, Response};

/// `op: http` posts to the URL in `to`; `op: spawn` starts a job of the function in `to`.
pub fn handle(request: Request) -> Result<Response, Box<dyn Error>> {
    let to = request.header("to").unwrap_or_default().to_string();
    let op = request.header("op").unwrap_or_default().to_string();
    let headers: Vec<(String, String)> =
        request.headers.into_iter().filter(|(k, _)| k != "op" && k != "to").collect();
    match op.as_str() {
        "http" => {
            let outbound = http::Request {
                method: "POST".into(),
                url: to,
                headers,
                body: request.body,
                timeout_ms: None,
            };
            let reply = http::invoke(&outbound)?;
            Ok(Response { status: reply.status, headers: reply.headers, body: reply.body })
        }
        "spawn" => Ok(Response::ok(spawn::job(&to, &headers, &request.body)?)),
        _ => Err(format!("unknown op {op:?}: use http or spawn").into()),
    }
}

flotilla::export!(handle);
