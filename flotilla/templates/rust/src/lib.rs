//! __NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in statics.

use flotilla::{Request, Response};

/// Greet the caller with what they sent.
fn handle(request: Request) -> Result<Response, String> {
    let mut body = b"Hello from __NAME__! You sent: ".to_vec();
    body.extend_from_slice(&request.body);
    Ok(Response {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body,
    })
}

flotilla::export!(handle);
