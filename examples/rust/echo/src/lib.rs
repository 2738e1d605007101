//! Echo: returns the request's body and headers with status 200.
//!
//! Nothing is copied: the body and headers the host handed over are moved into the response.

use flotilla::{Request, Response};

/// Reply with the request's own headers and body.
pub fn handle(request: Request) -> Response {
    Response { status: 200, headers: request.headers, body: request.body }
}

flotilla::export!(handle);
