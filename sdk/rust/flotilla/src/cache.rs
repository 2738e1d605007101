//! A key-value cache (Redis-backed), namespaced per function (WIT `cache`).
//!
//! The host prefixes every key with the function's `cache_namespace`, so a function sees
//! only its own keys. Keys are at most 1 KiB, values at most 1 MiB; `ttl_ms` of 0 means
//! no expiry.

use crate::abi::RetArea;
use crate::bindings::cache as ffi;

wit_error! {
    /// Why a cache call failed (WIT `cache.error`).
    pub enum Error {
        /// The cache backend could not be reached; the invocation goes on.
        0 => Unavailable(String) = "unavailable",
        /// The key or value broke a limit (key over 1 KiB, value over 1 MiB, ...).
        1 => InvalidArgument(String) = "invalid-argument",
    }
}

/// Reads a value; `None` when the key is absent or expired.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    let mut area = RetArea::<16>::new();
    unsafe { ffi::get(key.as_ptr(), key.len(), area.ptr()) };
    area.result(4, |a, at| {
        a.option(at, at + 4, |a, p| unsafe { crate::abi::take_bytes(a.slice(p)) })
    })
    .map_err(Error::lift)
}

/// Writes a value.
pub fn set(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), Error> {
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::set(key.as_ptr(), key.len(), value.as_ptr(), value.len(), ttl_ms as i64, area.ptr())
    };
    area.result(4, |_, _| ()).map_err(Error::lift)
}

/// Writes a value only if the key is absent (SET NX); `true` when written.
pub fn set_if_absent(key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, Error> {
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::set_if_absent(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            ttl_ms as i64,
            area.ptr(),
        )
    };
    area.result(4, |a, at| a.u8(at) != 0).map_err(Error::lift)
}

/// Writes a value only when the key exists; `true` when written.
pub fn set_if_present(key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, Error> {
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::set_if_present(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            ttl_ms as i64,
            area.ptr(),
        )
    };
    area.result(4, |a, at| a.u8(at) != 0).map_err(Error::lift)
}

/// Writes `value` only when the key's current value equals `expected` (atomically); `true`
/// when written. An absent key never equals anything.
pub fn set_if_equal(key: &str, expected: &[u8], value: &[u8], ttl_ms: u64) -> Result<bool, Error> {
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::set_if_equal(
            key.as_ptr(),
            key.len(),
            expected.as_ptr(),
            expected.len(),
            value.as_ptr(),
            value.len(),
            ttl_ms as i64,
            area.ptr(),
        )
    };
    area.result(4, |a, at| a.u8(at) != 0).map_err(Error::lift)
}

/// Removes a key; removing an absent key is not an error.
pub fn delete(key: &str) -> Result<(), Error> {
    let mut area = RetArea::<16>::new();
    unsafe { ffi::delete(key.as_ptr(), key.len(), area.ptr()) };
    area.result(4, |_, _| ()).map_err(Error::lift)
}

/// Atomically adds `delta` to an integer counter and returns the new value. A `ttl_ms`
/// above 0 sets the expiry when the counter is created.
pub fn increment(key: &str, delta: i64, ttl_ms: u64) -> Result<i64, Error> {
    // result<s64, error> is 8-aligned: the payload starts at 8.
    let mut area = RetArea::<24>::new();
    unsafe { ffi::increment(key.as_ptr(), key.len(), delta, ttl_ms as i64, area.ptr()) };
    area.result(8, |a, at| a.i64(at)).map_err(Error::lift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_follow_the_wit_variant() {
        let error = Error::from_wit(1, || "key too long".into());
        assert_eq!(error, Error::InvalidArgument("key too long".into()));
        assert_eq!((error.case(), error.detail()), ("invalid-argument", Some("key too long")));
        assert_eq!(Error::from_wit(0, || "down".into()).to_string(), "unavailable: down");
    }
}
