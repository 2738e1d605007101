//! __NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in statics.

use flotilla::{Request, Response};

/// Greet the caller with what they sent.
pub fn handle(request: Request) -> Response {
    let mut body = b"Hello from __NAME__! You sent: ".to_vec();
    body.extend_from_slice(&request.body);
    Response::ok(body).with_header("content-type", "text/plain")
}

flotilla::export!(handle);
