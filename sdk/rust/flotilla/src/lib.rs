//! Flotilla functions in Rust.
//!
//! A Flotilla function is a WebAssembly component (`wasm32-wasip2`) targeting the
//! `flotilla:function@0.1.1` world: it exports one handler, called once per invocation in a
//! brand-new instance, and reaches the outside only through the host interfaces below.
//!
//! ```no_run
//! use flotilla::{cache, Request, Response};
//!
//! fn handle(request: Request) -> Result<Response, String> {
//!     let hits = cache::increment("hits", 1, 0).map_err(|e| e.to_string())?;
//!     Ok(Response::new(200)
//!         .with_header("x-hits", hits.to_string())
//!         .with_body(request.body))
//! }
//!
//! flotilla::export!(handle);
//! ```
//!
//! Modules: [`cache`], [`http`], [`s3`], [`dynamodb`], [`log`], [`invocation`], [`secrets`],
//! [`topics`], [`spawn`]. Every host call that can fail returns `Result<_, Error>` where
//! `Error` is that interface's WIT `error` variant as a Rust enum; [`log`] and
//! [`invocation`] cannot fail.
//!
//! The canonical-ABI glue is written by hand (no wit-bindgen): `abi` (layouts, ownership),
//! `bindings` (the imports' core signatures) and `export` (the `handle` export).
#![deny(missing_docs)]

#[macro_use]
mod bindings;
#[doc(hidden)]
pub mod abi;
#[doc(hidden)]
pub mod export;

pub mod cache;
pub mod dynamodb;
pub mod http;
pub mod invocation;
pub mod log;
pub mod s3;
pub mod secrets;
pub mod spawn;
pub mod topics;

mod types;

pub use types::{HandlerResult, Headers, Request, Response};

/// Exports a handler as the component's `handle` function.
///
/// The handler is any function or closure taking a [`Request`] and returning a
/// [`Response`] or a `Result<Response, E>` where `E: Display` (an `Err` reaches the caller
/// as a function error with that message). Call it once, at the crate's top level; the
/// crate must be built as a `cdylib` for `wasm32-wasip2` (`flotilla build` does both).
///
/// ```ignore
/// fn handle(request: flotilla::Request) -> flotilla::Response {
///     flotilla::Response::new(200).with_body(request.body)
/// }
/// flotilla::export!(handle);
/// ```
///
/// It defines the core exports `handle`, `cabi_post_handle` and `cabi_realloc` (on wasm32
/// only, so the crate's pure code still builds and tests on the build machine).
#[macro_export]
macro_rules! export {
    ($handler:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(export_name = "handle")]
            unsafe extern "C" fn __flotilla_handle(
                id: *mut u8,
                id_len: usize,
                function: *mut u8,
                function_len: usize,
                headers: *mut u8,
                headers_len: usize,
                body: *mut u8,
                body_len: usize,
            ) -> *mut u8 {
                unsafe {
                    $crate::export::handle(
                        $handler,
                        id,
                        id_len,
                        function,
                        function_len,
                        headers,
                        headers_len,
                        body,
                        body_len,
                    )
                }
            }

            #[unsafe(export_name = "cabi_post_handle")]
            unsafe extern "C" fn __flotilla_post_handle(area: *mut u8) {
                unsafe { $crate::export::post_handle(area) }
            }

            #[unsafe(export_name = "cabi_realloc")]
            unsafe extern "C" fn __flotilla_cabi_realloc(
                old: *mut u8,
                old_len: usize,
                align: usize,
                new_len: usize,
            ) -> *mut u8 {
                unsafe { $crate::abi::realloc(old, old_len, align, new_len) }
            }
        };
    };
}
