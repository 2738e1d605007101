//! What the caller asked for beyond the request record, and how this invocation runs
//! (WIT `invocation`). None of these calls can fail.

use crate::abi::{self, RetArea};
use crate::bindings::invocation as ffi;

/// How the invocation was started (WIT `invocation.start-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartKind {
    /// A caller waits for the response (HTTP invoke or the Python client).
    Sync,
    /// An asynchronous job submitted by a caller.
    Job,
    /// A job started by another function through [`spawn`](crate::spawn).
    Spawned,
    /// A job started by a schedule.
    Scheduled,
}

impl StartKind {
    /// The kind's WIT name: `sync`, `job`, `spawned` or `scheduled`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Sync => "sync",
            StartKind::Job => "job",
            StartKind::Spawned => "spawned",
            StartKind::Scheduled => "scheduled",
        }
    }

    pub(crate) fn from_wit(index: i32) -> StartKind {
        match index {
            0 => StartKind::Sync,
            1 => StartKind::Job,
            2 => StartKind::Spawned,
            3 => StartKind::Scheduled,
            other => abi::invalid("start-kind", other as u8),
        }
    }
}

/// The HTTP method of the call (`"POST"` when the caller named none).
pub fn method() -> String {
    let mut area = RetArea::<8>::new();
    unsafe { ffi::method(area.ptr()) };
    unsafe { abi::take_string(area.slice(0)) }
}

/// The sub-path below the function's invoke URL, `"/"` when none.
pub fn path() -> String {
    let mut area = RetArea::<8>::new();
    unsafe { ffi::path(area.ptr()) };
    unsafe { abi::take_string(area.slice(0)) }
}

/// Decoded query parameters in order; repeats kept.
pub fn query() -> Vec<(String, String)> {
    let mut area = RetArea::<8>::new();
    unsafe { ffi::query(area.ptr()) };
    unsafe { abi::take_pairs(area.slice(0)) }
}

/// The id of the API key that made the call; `None` for public or dev-mode calls.
pub fn caller() -> Option<String> {
    let mut area = RetArea::<12>::new();
    unsafe { ffi::caller(area.ptr()) };
    area.option(0, 4, |a, p| unsafe { abi::take_string(a.slice(p)) })
}

/// How this invocation was started.
pub fn kind() -> StartKind {
    StartKind::from_wit(unsafe { ffi::kind() })
}

/// 1 on the first run, 2 and up on retries of a job.
pub fn attempt() -> u32 {
    unsafe { ffi::attempt() as u32 }
}

/// Milliseconds left before this invocation's timeout.
pub fn remaining_ms() -> u32 {
    unsafe { ffi::remaining_ms() as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_kinds_in_wit_order() {
        let names: Vec<_> = (0..4).map(|i| StartKind::from_wit(i).as_str()).collect();
        assert_eq!(names, ["sync", "job", "spawned", "scheduled"]);
    }
}
