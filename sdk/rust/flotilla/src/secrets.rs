//! The function's own secrets (WIT `secrets`).

use crate::abi::{self, RetArea};
use crate::bindings::secrets as ffi;

wit_error! {
    /// Why reading a secret failed (WIT `secrets.error`).
    pub enum Error {
        /// The secret store could not be reached.
        0 => Unavailable(String) = "unavailable",
    }
}

/// A secret's value; `None` when the function has no secret of that name.
pub fn get(name: &str) -> Result<Option<String>, Error> {
    let mut area = RetArea::<16>::new();
    unsafe { ffi::get(name.as_ptr(), name.len(), area.ptr()) };
    area.result(4, |a, at| a.option(at, at + 4, |a, p| unsafe { abi::take_string(a.slice(p)) }))
        .map_err(Error::lift)
}
