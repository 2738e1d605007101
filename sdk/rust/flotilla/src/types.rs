//! The handler's input and output: the WIT `types.request` and `types.response` records.

use std::fmt;

/// HTTP-style headers as ordered `(name, value)` pairs; names may repeat.
pub type Headers = Vec<(String, String)>;

/// One invocation's input (WIT `types.request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Unique id of this invocation (also in the `FLOTILLA_INVOCATION_ID` variable).
    pub invocation_id: String,
    /// Name of the deployed function being invoked.
    pub function_name: String,
    /// Headers the caller sent, in order, repeats kept.
    pub headers: Headers,
    /// Raw request body, at most the function's `max_body_bytes`.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name`, compared ASCII case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` in order (ASCII case-insensitive).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as UTF-8 text, or the decoding error.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }
}

/// One invocation's output (WIT `types.response`), returned to the caller as-is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code the caller sees (100-599; others fail the invocation).
    pub status: u16,
    /// Response headers, in order.
    pub headers: Headers,
    /// Raw response body, at most the function's `max_body_bytes`.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// Status 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Response::new(200).with_body(body)
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into())
    }

    /// An `application/json` response whose body is `json` (already serialized).
    pub fn json(status: u16, json: impl Into<String>) -> Self {
        Response::new(status).with_header("content-type", "application/json").with_body(json.into())
    }

    /// This response with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This response with `body` (moved, not copied, when it is a `Vec<u8>` or `String`).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What a handler may return: a [`Response`], or `Result<Response, E>` where an `Err`
/// becomes the WIT `err(string)` (a function error) with `E`'s `Display` text.
pub trait HandlerResult {
    /// The WIT result: the response, or the error message.
    fn into_result(self) -> Result<Response, String>;
}

impl HandlerResult for Response {
    fn into_result(self) -> Result<Response, String> {
        Ok(self)
    }
}

impl<E: fmt::Display> HandlerResult for Result<Response, E> {
    fn into_result(self) -> Result<Response, String> {
        self.map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_case_insensitively_in_order() {
        let request = Request {
            headers: vec![
                ("X-A".into(), "1".into()),
                ("b".into(), "2".into()),
                ("x-a".into(), "3".into()),
            ],
            ..Request::default()
        };
        assert_eq!(request.header("x-a"), Some("1"));
        assert_eq!(request.header_values("X-a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(request.header("c"), None);
    }

    #[test]
    fn builders_keep_header_order() {
        let response = Response::text(404, "gone").with_header("x", "y");
        assert_eq!(response.status, 404);
        assert_eq!(response.body, b"gone");
        assert_eq!(
            response.headers,
            [
                ("content-type".to_string(), "text/plain; charset=utf-8".to_string()),
                ("x".into(), "y".into())
            ]
        );
    }

    #[test]
    fn handler_results_turn_errors_into_messages() {
        assert_eq!(Response::ok("a").into_result().map(|r| r.body), Ok(b"a".to_vec()));
        let failed: Result<Response, std::num::ParseIntError> =
            "x".parse::<u8>().map(|_| Response::new(200));
        assert_eq!(failed.into_result(), Err("invalid digit found in string".to_string()));
    }
}
