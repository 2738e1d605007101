//! Conformance guest (Rust): the protocol every language's guest implements.
//!
//! Header `op` names the operation, headers `a1`..`a4` (and `expected`) are its arguments,
//! the body is its bytes argument; only the first of a repeated header counts. Results: 200
//! with the value, 204 for none, 590 `<case>[:<detail>]` when a host call returned its
//! interface's error variant, 400 `unknown op`. Edition 2024 on purpose: the SDK's macro
//! must work in both editions (the examples use 2021).

use std::fmt::Display;
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla::{Request, Response};
use flotilla::{cache, dynamodb, http, invocation, log, s3, secrets, spawn, topics};

/// The first `op`, `a1`..`a4` and `expected` headers; "" when absent.
struct Args {
    op: String,
    a: [String; 5],
    expected: String,
}

impl Args {
    fn of(request: &Request) -> Args {
        let first = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Args {
            op: first("op"),
            a: [String::new(), first("a1"), first("a2"), first("a3"), first("a4")],
            expected: first("expected"),
        }
    }

    /// Argument `i` as a number (absent = 0); a bad number traps, as in the other guests.
    fn num<T: std::str::FromStr>(&self, i: usize) -> T
    where
        T::Err: std::fmt::Debug,
    {
        let text = if self.a[i].is_empty() { "0" } else { self.a[i].as_str() };
        text.parse().unwrap_or_else(|e| panic!("a{i}={text:?} is not a number: {e:?}"))
    }
}

/// What a host error becomes: 590 `<case>` or `<case>:<detail>`.
trait HostError {
    fn case(&self) -> &'static str;
    fn detail(&self) -> Option<&str>;
}

macro_rules! host_error {
    ($($t:ty),*) => {$(
        impl HostError for $t {
            fn case(&self) -> &'static str { <$t>::case(self) }
            fn detail(&self) -> Option<&str> { <$t>::detail(self) }
        }
    )*};
}
host_error!(
    cache::Error,
    http::Error,
    s3::Error,
    dynamodb::Error,
    secrets::Error,
    topics::Error,
    spawn::Error
);

fn failed(error: &dyn HostError) -> Response {
    let body = match error.detail() {
        Some(detail) => format!("{}:{}", error.case(), detail),
        None => error.case().to_string(),
    };
    Response::new(590).with_body(body)
}

fn none() -> Response {
    Response::new(204)
}

fn text(value: impl Display) -> Response {
    Response::ok(value.to_string())
}

fn flag(value: bool) -> Response {
    text(value)
}

fn maybe(value: Option<impl Into<Vec<u8>>>) -> Response {
    value.map_or_else(none, Response::ok)
}

/// Runs a host call: its result through `answer`, or 590 for its error variant.
fn host<T, E: HostError>(result: Result<T, E>, answer: impl FnOnce(T) -> Response) -> Response {
    match result {
        Ok(value) => answer(value),
        Err(error) => failed(&error),
    }
}

fn outcome(ok: bool) -> Response {
    text(if ok { "ok" } else { "error" })
}

fn write_line(mut stream: impl Write, value: &str) -> Response {
    stream
        .write_all(value.as_bytes())
        .and_then(|_| stream.write_all(b"\n"))
        .and_then(|_| stream.flush())
        .expect("writing to a captured stream");
    none()
}

/// Allocates and touches 1 MiB blocks until the store's memory limit kills the guest.
fn memory_bomb() -> Response {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&held);
    }
}

fn spin() -> Response {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

unsafe extern "C" {
    // wasi-libc: `CLOCK_MONOTONIC` is the address of this object; clock_gettime reads the
    // WASI monotonic clock (std exposes no absolute monotonic reading).
    static _CLOCK_MONOTONIC: u8;
    fn clock_gettime(clock: *const u8, time: *mut Timespec) -> i32;
    fn getentropy(buffer: *mut u8, length: usize) -> i32;
}

#[repr(C)]
struct Timespec {
    seconds: i64,
    nanoseconds: i32, // `long` on wasm32
}

fn clocks() -> Response {
    let wall =
        SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64();
    let mut now = Timespec { seconds: 0, nanoseconds: 0 };
    let status = unsafe { clock_gettime(&raw const _CLOCK_MONOTONIC, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    let monotonic = now.seconds as i128 * 1_000_000_000 + now.nanoseconds as i128;
    text(format!("{wall} {monotonic}"))
}

fn random() -> Response {
    let mut bytes = [0u8; 16];
    assert_eq!(unsafe { getentropy(bytes.as_mut_ptr(), bytes.len()) }, 0, "getentropy failed");
    Response::ok(bytes.to_vec())
}

fn outbound(args: &Args, body: Vec<u8>) -> Response {
    let mut request = http::Request::new(args.a[1].as_str(), args.a[2].as_str()).with_body(body);
    request.timeout_ms = (!args.a[3].is_empty()).then(|| args.num(3));
    host(http::invoke(&request), |reply| Response {
        status: reply.status,
        headers: reply.headers,
        body: reply.body,
    })
}

fn call_info() -> Response {
    let query: Vec<String> =
        invocation::query().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let lines = [
        invocation::method(),
        invocation::path(),
        query.join("&"),
        invocation::caller().unwrap_or_default(),
        invocation::kind().as_str().to_string(),
        invocation::attempt().to_string(),
    ];
    text(lines.join("\n"))
}

/// Runs the operation the `op` header names.
pub fn handle(request: Request) -> Result<Response, String> {
    let args = Args::of(&request);
    let a = &args.a;
    let ttl = |i| args.num::<u64>(i);
    Ok(match args.op.as_str() {
        "echo" => Response { status: 200, headers: request.headers, body: request.body },
        "status" => Response::new(args.num(1)),
        "err" => return Err(a[1].clone()),
        "trap" => panic!("trap requested"),
        "spin" => spin(),
        "memory" => memory_bomb(),
        "big" => Response::ok(vec![b'x'; args.num(1)]),
        "env" => maybe(std::env::var(&a[1]).ok()),
        "clock" => clocks(),
        "random" => random(),
        "file" => outcome(std::fs::File::open(&a[1]).is_ok()),
        // std::net needs a WASI 0.2 libc; Debian's wasi-libc is preview 1 and has no sockets.
        "socket" => outcome(false),
        "stdin" => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input).expect("reading stdin");
            Response::ok(input)
        }
        "stdout" => write_line(std::io::stdout(), &a[1]),
        "stderr" => write_line(std::io::stderr(), &a[1]),
        "cache-get" => host(cache::get(&a[1]), maybe),
        "cache-set" => host(cache::set(&a[1], &request.body, ttl(2)), |()| none()),
        "cache-set-if-absent" => host(cache::set_if_absent(&a[1], &request.body, ttl(2)), flag),
        "cache-set-if-present" => host(cache::set_if_present(&a[1], &request.body, ttl(2)), flag),
        "cache-set-if-equal" => {
            host(cache::set_if_equal(&a[1], args.expected.as_bytes(), &request.body, ttl(2)), flag)
        }
        "cache-delete" => host(cache::delete(&a[1]), |()| none()),
        "cache-increment" => host(cache::increment(&a[1], args.num(2), ttl(3)), text),
        "http" => outbound(&args, request.body),
        "s3-get" => host(s3::get_object(&a[1], &a[2]), maybe),
        "s3-put" => {
            let content_type = (!a[3].is_empty()).then_some(a[3].as_str());
            host(s3::put_object(&a[1], &a[2], &request.body, content_type), |()| none())
        }
        "s3-delete" => host(s3::delete_object(&a[1], &a[2]), |()| none()),
        "ddb-get" => host(dynamodb::get_item(&a[1], &a[2]), maybe),
        "ddb-put" => host(dynamodb::put_item(&a[1], &a[2]), |()| none()),
        "ddb-put-if" => {
            let values = if a[4].is_empty() { "{}" } else { a[4].as_str() };
            host(dynamodb::put_item_if(&a[1], &a[2], &a[3], values), flag)
        }
        "ddb-delete" => host(dynamodb::delete_item(&a[1], &a[2]), |()| none()),
        "log" => {
            let level =
                log::Level::from_name(&a[1]).unwrap_or_else(|| panic!("unknown level {:?}", a[1]));
            log::log(level, &a[2]);
            none()
        }
        "invocation" => call_info(),
        "secret" => host(secrets::get(&a[1]), maybe),
        "publish" => host(topics::publish(&a[1], &request.body), |()| none()),
        "spawn" => host(spawn::job::<&str, &str>(&a[1], &[], &request.body), text),
        _ => Response::new(400).with_body("unknown op"),
    })
}

flotilla::export!(handle);
