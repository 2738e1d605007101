//! Outbound HTTP, limited to the function's `allowed_hosts` (WIT `http`).
//!
//! ```no_run
//! use flotilla::http;
//!
//! let reply = http::invoke(&http::Request::get("https://api.example.com/v1/items")
//!     .with_header("accept", "application/json")
//!     .with_timeout_ms(2_000))?;
//! assert!(reply.status < 500);
//! # Ok::<(), http::Error>(())
//! ```

use crate::abi::{self, RetArea};
use crate::bindings::http as ffi;
use crate::Headers;

/// An outbound HTTP request (WIT `http.request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// HTTP method, e.g. `"GET"` or `"POST"`.
    pub method: String,
    /// Absolute `http://` or `https://` URL; its host must be allowed.
    pub url: String,
    /// Request headers.
    pub headers: Headers,
    /// Request body (empty for none).
    pub body: Vec<u8>,
    /// Per-request timeout; capped by the invocation's remaining time.
    pub timeout_ms: Option<u32>,
}

impl Request {
    /// A request with `method` to `url`, no headers, no body, the default timeout.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request { method: method.into(), url: url.into(), ..Request::default() }
    }

    /// A GET request to `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new("GET", url)
    }

    /// A POST request to `url` with `body`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request::new("POST", url).with_body(body)
    }

    /// This request with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This request with `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// This request with a timeout of `ms` milliseconds.
    pub fn with_timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
}

/// The upstream's response (WIT `http.response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, in order.
    pub headers: Headers,
    /// Response body, at most the function's `max_body_bytes`.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

wit_error! {
    /// Why an outbound request failed (WIT `http.error`).
    pub enum Error {
        /// The host is not in `allowed_hosts`, or resolves to a forbidden address.
        0 => Denied(String) = "denied",
        /// No response within the timeout (or the invocation's remaining time).
        1 => Timeout = "timeout",
        /// The connection could not be made or broke.
        2 => Connection(String) = "connection",
        /// The request was malformed (bad URL, method or header).
        3 => InvalidRequest(String) = "invalid-request",
        /// The response body exceeded the function's `max_body_bytes`.
        4 => TooLarge = "too-large",
    }
}

/// Sends one request and waits for the whole response.
pub fn invoke(request: &Request) -> Result<Response, Error> {
    let headers = abi::lower_pairs(&request.headers);
    let mut area = RetArea::<24>::new();
    unsafe {
        ffi::invoke(
            request.method.as_ptr(),
            request.method.len(),
            request.url.as_ptr(),
            request.url.len(),
            headers.as_ptr().cast(),
            headers.len(),
            request.body.as_ptr(),
            request.body.len(),
            request.timeout_ms.is_some() as i32,
            request.timeout_ms.unwrap_or(0) as i32,
            area.ptr(),
        )
    };
    // ok: status u16 at 4, headers at 8, body at 16.
    area.result(4, |a, at| unsafe {
        Response {
            status: a.u16(at),
            headers: abi::take_pairs(a.slice(at + 4)),
            body: abi::take_bytes(a.slice(at + 12)),
        }
    })
    .map_err(Error::lift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_without_payload_have_no_detail() {
        let timeout = Error::from_wit(1, || unreachable!("timeout carries no string"));
        assert_eq!(
            (timeout.case(), timeout.detail(), timeout.to_string()),
            ("timeout", None, "timeout".into())
        );
        assert_eq!(Error::from_wit(4, || unreachable!()), Error::TooLarge);
        assert_eq!(Error::from_wit(3, || "bad url".into()).to_string(), "invalid-request: bad url");
    }

    #[test]
    fn builders() {
        let request = Request::post("http://h/", "x").with_header("a", "b").with_timeout_ms(5);
        assert_eq!(
            (request.method.as_str(), request.body.as_slice(), request.timeout_ms),
            ("POST", &b"x"[..], Some(5))
        );
    }
}
