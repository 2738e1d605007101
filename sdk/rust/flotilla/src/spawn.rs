//! Asynchronous jobs started from inside a function (WIT `spawn`).

use crate::abi::{self, RetArea};
use crate::bindings::spawn as ffi;

wit_error! {
    /// Why a spawn failed (WIT `spawn.error`).
    pub enum Error {
        /// The function is not in this function's `spawn_functions`.
        0 => Denied(String) = "denied",
        /// The queue or the job store could not be reached.
        1 => Unavailable(String) = "unavailable",
        /// Bad function name, body over the target's limit, or too many spawns.
        2 => InvalidArgument(String) = "invalid-argument",
    }
}

/// Submits a job of `function` with `headers` and `body`; returns its job id at once.
///
/// `headers` may be any slice of string pairs, e.g. `&[("x-a", "1")]` or a
/// [`Headers`](crate::Headers).
pub fn job<A: AsRef<str>, B: AsRef<str>>(
    function: &str,
    headers: &[(A, B)],
    body: &[u8],
) -> Result<String, Error> {
    let entries = abi::lower_pairs(headers);
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::job(
            function.as_ptr(),
            function.len(),
            entries.as_ptr().cast(),
            entries.len(),
            body.as_ptr(),
            body.len(),
            area.ptr(),
        )
    };
    area.result(4, |a, at| unsafe { abi::take_string(a.slice(at)) }).map_err(Error::lift)
}
