//! Amazon S3 object storage, limited to the function's `s3_buckets` (WIT `s3`).

use crate::abi::{self, RetArea};
use crate::bindings::s3 as ffi;

wit_error! {
    /// Why an S3 call failed (WIT `s3.error`).
    pub enum Error {
        /// The bucket is not in the function's `s3_buckets`, or access was refused.
        0 => Denied(String) = "denied",
        /// S3 could not be reached or failed.
        1 => Unavailable(String) = "unavailable",
        /// The bucket name, key or body was invalid.
        2 => InvalidArgument(String) = "invalid-argument",
    }
}

/// Reads an object; `None` when it does not exist.
pub fn get_object(bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
    let mut area = RetArea::<16>::new();
    unsafe { ffi::get_object(bucket.as_ptr(), bucket.len(), key.as_ptr(), key.len(), area.ptr()) };
    area.result(4, |a, at| a.option(at, at + 4, |a, p| unsafe { abi::take_bytes(a.slice(p)) }))
        .map_err(Error::lift)
}

/// Writes an object, replacing any existing one; `content_type` defaults to the host's.
pub fn put_object(
    bucket: &str,
    key: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(), Error> {
    let mut area = RetArea::<16>::new();
    let (is_some, ct) = match content_type {
        Some(ct) => (1, ct),
        None => (0, ""),
    };
    unsafe {
        ffi::put_object(
            bucket.as_ptr(),
            bucket.len(),
            key.as_ptr(),
            key.len(),
            body.as_ptr(),
            body.len(),
            is_some,
            ct.as_ptr(),
            ct.len(),
            area.ptr(),
        )
    };
    area.result(4, |_, _| ()).map_err(Error::lift)
}

/// Deletes an object; deleting an absent object is not an error.
pub fn delete_object(bucket: &str, key: &str) -> Result<(), Error> {
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::delete_object(bucket.as_ptr(), bucket.len(), key.as_ptr(), key.len(), area.ptr())
    };
    area.result(4, |_, _| ()).map_err(Error::lift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_cases_in_wit_order() {
        let names: Vec<_> = (0..3).map(|i| Error::from_wit(i, String::new).case()).collect();
        assert_eq!(names, ["denied", "unavailable", "invalid-argument"]);
    }
}
