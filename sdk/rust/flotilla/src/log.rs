//! Structured logs attached to the invocation's result (WIT `log`).
//!
//! Records past the per-invocation cap are dropped by the host. Writing to stdout or
//! stderr also works (both are captured) but costs more per call.

use crate::bindings::log as ffi;

/// Severity of a log record (WIT `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Level {
    /// Detailed diagnostics.
    Debug = 0,
    /// Normal operation.
    Info = 1,
    /// Something unexpected that the function handled.
    Warn = 2,
    /// A failure.
    Error = 3,
}

impl Level {
    /// The level's WIT name: `debug`, `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The level named `name` (its WIT name), if any.
    pub fn from_name(name: &str) -> Option<Level> {
        [Level::Debug, Level::Info, Level::Warn, Level::Error]
            .into_iter()
            .find(|l| l.as_str() == name)
    }
}

/// Records one message at `level`.
pub fn log(level: Level, message: &str) {
    unsafe { ffi::log(level as i32, message.as_ptr(), message.len()) }
}

/// Records a debug message.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Records an info message.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Records a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Records an error.
pub fn error(message: &str) {
    log(Level::Error, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_have_their_wit_names_and_indexes() {
        for (index, name) in ["debug", "info", "warn", "error"].iter().enumerate() {
            let level = Level::from_name(name).unwrap();
            assert_eq!((level as usize, level.as_str()), (index, *name));
        }
        assert_eq!(Level::from_name("fatal"), None);
    }
}
