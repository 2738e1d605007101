//! Read-through cache in front of an HTTP upstream.
//!
//! The upstream URL comes from the `x-upstream-url` request header, else the `UPSTREAM_URL`
//! env variable. The cache key is the URL. On a hit the cached body is returned; on a miss
//! the upstream is fetched with `http::invoke` and, if it answered 200, its body is cached
//! for `CACHE_TTL_MS` (default 60000). The `x-cache` response header says `hit`, `miss`, or
//! `bypass` (cache unavailable: the upstream is still served).
//!
//! Upstream failures become 502 (504 on timeout) with a plain-text message.

use std::env;

use flotilla::{cache, http, log, Request, Response};

/// The cache host refuses values over 1 MiB.
const MAX_CACHED_BYTES: usize = 1024 * 1024;

/// A plain-text response.
fn text(status: u16, message: String, cache_state: &str) -> Response {
    Response::text(status, message).with_header("x-cache", cache_state)
}

/// Serve the upstream's body from the cache, filling it on a miss.
pub fn handle(request: Request) -> Response {
    let url = match request.header("x-upstream-url") {
        Some(url) => url.to_string(),
        None => env::var("UPSTREAM_URL").unwrap_or_default(),
    };
    if url.is_empty() {
        return text(
            400,
            "no upstream: send x-upstream-url or set UPSTREAM_URL\n".into(),
            "bypass",
        );
    }
    let ttl_ms = env::var("CACHE_TTL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(60_000);
    let key = format!("readthrough:{url}");

    let (cached, cache_ok) = match cache::get(&key) {
        Ok(cached) => (cached, true),
        Err(error) => {
            log::warn(&format!("cache get failed: {error}"));
            (None, false)
        }
    };
    if let Some(body) = cached {
        return Response::ok(body).with_header("x-cache", "hit");
    }

    let upstream = match http::invoke(&http::Request::get(url.as_str())) {
        Ok(upstream) => upstream,
        Err(http::Error::Timeout) => {
            return text(504, format!("upstream {url} timed out\n"), "bypass")
        }
        Err(error) => return text(502, format!("upstream {url} failed: {error}\n"), "bypass"),
    };

    let state = if cache_ok { "miss" } else { "bypass" };
    if cache_ok && upstream.status == 200 && upstream.body.len() <= MAX_CACHED_BYTES {
        if let Err(error) = cache::set(&key, &upstream.body, ttl_ms) {
            log::warn(&format!("cache set failed: {error}"));
        }
    }
    let mut headers: Vec<(String, String)> = upstream
        .headers
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .collect();
    headers.push(("x-cache".into(), state.into()));
    Response { status: upstream.status, headers, body: upstream.body }
}

flotilla::export!(handle);
