//! Rate-limited token vending.
//!
//! Each caller (the `x-caller` header, default `anonymous`) may get `RATE_LIMIT` tokens
//! (default 10) per fixed window of `RATE_WINDOW_MS` (default 60000). Counting uses
//! `cache::increment` on a key per caller and window, created with the window as its TTL.
//! Over the limit the answer is 429 with `retry-after`; otherwise 200 with a JSON body
//! `{"token": ..., "remaining": n, "expires_in_ms": ...}`. The token is also stored in the
//! cache for `TOKEN_TTL_MS` (default 300000) so another function can verify it. When the
//! cache is unavailable no token is vended (503): failing closed keeps the limit meaningful.

use std::env;
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla::{cache, Request, Response};

/// A JSON response.
fn reply(status: u16, json: String) -> Response {
    Response::json(status, json)
}

/// `value` as a JSON string literal.
fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The caller key: the `x-caller` header (first 200 characters), or `anonymous`.
fn caller_of(request: &Request) -> String {
    match request.header("x-caller") {
        Some(caller) if !caller.is_empty() => caller.chars().take(200).collect(),
        _ => "anonymous".into(),
    }
}

/// An environment variable as a number, `default` when unset or not a number.
fn setting(name: &str, default: u64) -> u64 {
    env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

unsafe extern "C" {
    // wasi-libc's getentropy reads WASI's secure random source (no `getrandom` crate here).
    fn getentropy(buffer: *mut u8, length: usize) -> i32;
}

/// A URL-safe token of 32 random bytes (43 characters, like Python's token_urlsafe(32)).
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    assert_eq!(unsafe { getentropy(bytes.as_mut_ptr(), bytes.len()) }, 0, "no randomness");
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut token = String::with_capacity(43);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            token.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    token
}

/// Vend a token unless the caller is over its limit in the current window.
pub fn handle(request: Request) -> Response {
    let limit = setting("RATE_LIMIT", 10) as i64;
    let window_ms = setting("RATE_WINDOW_MS", 60_000).max(1);
    let token_ttl_ms = setting("TOKEN_TTL_MS", 300_000);
    let caller = caller_of(&request);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let window = now_ms / window_ms;

    let count = match cache::increment(&format!("rate:{caller}:{window}"), 1, window_ms) {
        Ok(count) => count,
        Err(error) => {
            let message = json_string(&format!("rate limiter unavailable: {error}"));
            return reply(503, format!(r#"{{"error": {message}}}"#));
        }
    };
    if count > limit {
        let retry_after_s = ((window + 1) * window_ms - now_ms).div_ceil(1000).max(1);
        let body = format!(
            r#"{{"error": "rate limit exceeded", "limit": {limit}, "window_ms": {window_ms}}}"#
        );
        return reply(429, body).with_header("retry-after", retry_after_s.to_string());
    }
    let token = new_token();
    if let Err(error) = cache::set(&format!("token:{token}"), caller.as_bytes(), token_ttl_ms) {
        let message = json_string(&format!("token store unavailable: {error}"));
        return reply(503, format!(r#"{{"error": {message}}}"#));
    }
    let remaining = limit - count;
    reply(
        200,
        format!(
            r#"{{"token": "{token}", "remaining": {remaining}, "expires_in_ms": {token_ttl_ms}}}"#
        ),
    )
}

flotilla::export!(handle);
