//! Publishing to topics that subscribers read live (WIT `topics`).

use crate::abi::RetArea;
use crate::bindings::topics as ffi;

wit_error! {
    /// Why a publish failed (WIT `topics.error`).
    pub enum Error {
        /// The topic does not match the function's `publish_topics`.
        0 => Denied(String) = "denied",
        /// The broker could not be reached.
        1 => Unavailable(String) = "unavailable",
        /// Bad topic name or message over 1 MiB.
        2 => InvalidArgument(String) = "invalid-argument",
    }
}

/// Publishes one message to `topic`.
pub fn publish(topic: &str, message: &[u8]) -> Result<(), Error> {
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::publish(topic.as_ptr(), topic.len(), message.as_ptr(), message.len(), area.ptr())
    };
    area.result(4, |_, _| ()).map_err(Error::lift)
}
