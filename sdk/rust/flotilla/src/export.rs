//! The `handle` export behind [`export!`](crate::export): lifting the request, lowering the
//! response, and freeing it in `cabi_post_handle`.
//!
//! `handle(request) -> result<response, string>` flattens to eight `i32` parameters (the
//! request record's two strings and two lists) and one `i32` result: the address of a
//! 24-byte return area. The request's strings and body are taken without copying (the host
//! allocated them through `cabi_realloc`); the response's body and strings are handed to
//! the host in place, and stay alive until the host calls `cabi_post_handle`.
//!
//! Static constructors (wasi-libc's, e.g. the one that finds preopened directories) run at
//! the start of `handle`, once per instance, as wit-bindgen's `run_ctors_once` does. Calling
//! `__wasm_call_ctors` explicitly also stops wasm-ld from wrapping every export in
//! constructor and destructor calls, which would run them inside `cabi_realloc` and
//! post-return, where a component may not call imports (the trap "cannot leave component
//! instance").

use std::cell::UnsafeCell;

use crate::abi::{self, RetArea, HANDLE_RESULT_SIZE};
use crate::{HandlerResult, Request, Response};

/// What the return area points into, kept alive until `cabi_post_handle`.
#[allow(dead_code)] // held, never read: dropping it is what frees the memory
enum Pending {
    Ok(Response, Vec<abi::PairEntry>),
    Err(String),
}

struct State {
    area: RetArea<HANDLE_RESULT_SIZE>,
    pending: Option<Pending>,
}

/// The export's state. wasm32-wasip2 components are single-threaded and the host never calls
/// `handle` again before `cabi_post_handle`, so plain interior mutability is enough.
struct Slot(UnsafeCell<State>);

// SAFETY: see `Slot`: one thread, calls never overlap.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot(UnsafeCell::new(State { area: RetArea::new(), pending: None }));

/// Runs `handler` on the lifted request and returns the address of the lowered result.
///
/// # Safety
/// Only the canonical ABI's `handle` call may call this, with the host's arguments.
#[allow(clippy::too_many_arguments)]
pub unsafe fn handle<F, R>(
    handler: F,
    id: *mut u8,
    id_len: usize,
    function: *mut u8,
    function_len: usize,
    headers: *mut u8,
    headers_len: usize,
    body: *mut u8,
    body_len: usize,
) -> *mut u8
where
    F: FnOnce(Request) -> R,
    R: HandlerResult,
{
    run_ctors_once();
    let slice = |ptr: *mut u8, len: usize| (abi::addr(ptr), len as u32);
    // SAFETY: the host allocated each of these for us through cabi_realloc.
    let request = unsafe {
        Request {
            invocation_id: abi::take_string(slice(id, id_len)),
            function_name: abi::take_string(slice(function, function_len)),
            headers: abi::take_pairs(slice(headers, headers_len)),
            body: abi::take_bytes(slice(body, body_len)),
        }
    };
    let result = handler(request).into_result();
    // SAFETY: single-threaded, and no other reference to the state is alive (see `Slot`).
    let state = unsafe { &mut *SLOT.0.get() };
    state.pending = None; // a host that skipped post-return: free the previous response now
    let pending = match result {
        Ok(response) => {
            let entries = abi::lower_pairs(&response.headers);
            let headers = (abi::addr(entries.as_ptr()), entries.len() as u32);
            let body = (abi::addr(response.body.as_ptr()), response.body.len() as u32);
            abi::write_ok(&mut state.area, response.status, headers, body);
            Pending::Ok(response, entries)
        }
        Err(message) => {
            abi::write_err(&mut state.area, (abi::addr(message.as_ptr()), message.len() as u32));
            Pending::Err(message)
        }
    };
    state.pending = Some(pending);
    // std's stdout buffers up to a newline and no exit flushes it: flush per invocation.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    state.area.ptr()
}

/// Frees what the last `handle` returned, once the host has copied it.
///
/// # Safety
/// Only the canonical ABI's post-return call may call this.
pub unsafe fn post_handle(_area: *mut u8) {
    // SAFETY: as in `handle`.
    let state = unsafe { &mut *SLOT.0.get() };
    state.pending = None;
}

/// Runs the module's static constructors once (see the module's documentation).
fn run_ctors_once() {
    #[cfg(target_arch = "wasm32")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};

        unsafe extern "C" {
            fn __wasm_call_ctors();
        }
        static RAN: AtomicBool = AtomicBool::new(false);
        if !RAN.swap(true, Ordering::Relaxed) {
            // SAFETY: synthesized by wasm-ld; run once, before any code that needs it.
            unsafe { __wasm_call_ctors() };
        }
    }
}
