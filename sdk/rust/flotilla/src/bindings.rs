//! The world's core-wasm signatures: what wit-bindgen would generate for `wit/flotilla.wit`.
//!
//! Every import below is the canonical ABI's flattening of one WIT function: strings and
//! lists become `(pointer, length)`, `u64`/`s64` become `i64`, `option<T>` a discriminant
//! then `T`, enums an `i32`. A function with more than one flat result takes a pointer to a
//! return area as its last parameter instead (no function here has more than 16 flat
//! parameters, so none passes its parameters through memory). The layouts of those return
//! areas are read in each interface's module, with the helpers of `abi`.
//!
//! Off wasm32 (e.g. `cargo test` on the build machine) the imports are replaced by functions
//! that panic, so code using this crate still compiles and its pure parts can be tested.

/// Declares one interface's imports: extern on wasm32, panicking stand-ins elsewhere.
macro_rules! imports {
    ($module:literal { $( $wit:literal => fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?; )* }) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = $module)]
        unsafe extern "C" {
            $( #[link_name = $wit] pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
        $(
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(unused_variables, clippy::too_many_arguments)]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                super::not_wasm($module, $wit)
            }
        )*
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[cold]
fn not_wasm(module: &str, name: &str) -> ! {
    panic!("{module}#{name}: host calls only work inside a wasm32-wasip2 Flotilla component")
}

/// `flotilla:function/cache@0.1.1`.
pub mod cache {
    imports!("flotilla:function/cache@0.1.1" {
        "get" => fn get(key: *const u8, key_len: usize, ret: *mut u8);
        "set" => fn set(key: *const u8, key_len: usize, value: *const u8, value_len: usize, ttl_ms: i64, ret: *mut u8);
        "set-if-absent" => fn set_if_absent(key: *const u8, key_len: usize, value: *const u8, value_len: usize, ttl_ms: i64, ret: *mut u8);
        "delete" => fn delete(key: *const u8, key_len: usize, ret: *mut u8);
        "increment" => fn increment(key: *const u8, key_len: usize, delta: i64, ttl_ms: i64, ret: *mut u8);
        "set-if-equal" => fn set_if_equal(key: *const u8, key_len: usize, expected: *const u8, expected_len: usize, value: *const u8, value_len: usize, ttl_ms: i64, ret: *mut u8);
        "set-if-present" => fn set_if_present(key: *const u8, key_len: usize, value: *const u8, value_len: usize, ttl_ms: i64, ret: *mut u8);
    });
}

/// `flotilla:function/http@0.1.1`.
pub mod http {
    imports!("flotilla:function/http@0.1.1" {
        "invoke" => fn invoke(
            method: *const u8, method_len: usize, url: *const u8, url_len: usize,
            headers: *const u8, headers_len: usize, body: *const u8, body_len: usize,
            timeout_is_some: i32, timeout_ms: i32, ret: *mut u8);
    });
}

/// `flotilla:function/s3@0.1.1`.
pub mod s3 {
    imports!("flotilla:function/s3@0.1.1" {
        "get-object" => fn get_object(bucket: *const u8, bucket_len: usize, key: *const u8, key_len: usize, ret: *mut u8);
        "put-object" => fn put_object(
            bucket: *const u8, bucket_len: usize, key: *const u8, key_len: usize,
            body: *const u8, body_len: usize,
            content_type_is_some: i32, content_type: *const u8, content_type_len: usize, ret: *mut u8);
        "delete-object" => fn delete_object(bucket: *const u8, bucket_len: usize, key: *const u8, key_len: usize, ret: *mut u8);
    });
}

/// `flotilla:function/dynamodb@0.1.1`.
pub mod dynamodb {
    imports!("flotilla:function/dynamodb@0.1.1" {
        "get-item" => fn get_item(table: *const u8, table_len: usize, key: *const u8, key_len: usize, ret: *mut u8);
        "put-item" => fn put_item(table: *const u8, table_len: usize, item: *const u8, item_len: usize, ret: *mut u8);
        "delete-item" => fn delete_item(table: *const u8, table_len: usize, key: *const u8, key_len: usize, ret: *mut u8);
        "put-item-if" => fn put_item_if(
            table: *const u8, table_len: usize, item: *const u8, item_len: usize,
            condition: *const u8, condition_len: usize, values: *const u8, values_len: usize,
            ret: *mut u8);
    });
}

/// `flotilla:function/log@0.1.1`.
pub mod log {
    imports!("flotilla:function/log@0.1.1" {
        "log" => fn log(level: i32, message: *const u8, message_len: usize);
    });
}

/// `flotilla:function/invocation@0.1.1`.
pub mod invocation {
    imports!("flotilla:function/invocation@0.1.1" {
        "method" => fn method(ret: *mut u8);
        "path" => fn path(ret: *mut u8);
        "query" => fn query(ret: *mut u8);
        "caller" => fn caller(ret: *mut u8);
        "kind" => fn kind() -> i32;
        "attempt" => fn attempt() -> i32;
        "remaining-ms" => fn remaining_ms() -> i32;
    });
}

/// `flotilla:function/secrets@0.1.1`.
pub mod secrets {
    imports!("flotilla:function/secrets@0.1.1" {
        "get" => fn get(name: *const u8, name_len: usize, ret: *mut u8);
    });
}

/// `flotilla:function/topics@0.1.1`.
pub mod topics {
    imports!("flotilla:function/topics@0.1.1" {
        "publish" => fn publish(topic: *const u8, topic_len: usize, message: *const u8, message_len: usize, ret: *mut u8);
    });
}

/// `flotilla:function/spawn@0.1.1`.
pub mod spawn {
    imports!("flotilla:function/spawn@0.1.1" {
        "job" => fn job(
            function: *const u8, function_len: usize, headers: *const u8, headers_len: usize,
            body: *const u8, body_len: usize, ret: *mut u8);
    });
}

/// Declares an interface's `error` variant as a Rust enum: cases with a string payload or
/// none, each given its WIT index and kebab-case name; `case()`, `detail()`, `Display`,
/// `std::error::Error`, and lifting from a [`crate::abi::RawError`].
macro_rules! wit_error {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$case_meta:meta])* $index:literal => $case:ident $(($payload:ty))? = $wit:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$case_meta])* $case $(($payload))?, )*
        }

        impl $name {
            /// The case's name as the WIT spells it (kebab-case), e.g. `"invalid-argument"`.
            pub fn case(&self) -> &'static str {
                match self { $( Self::$case { .. } => $wit, )* }
            }

            /// The host's message for cases that carry one.
            pub fn detail(&self) -> Option<&str> {
                match self { $( Self::$case { .. } => wit_error!(@detail self $case $($payload)?), )* }
            }

            /// The case numbered `index` in the WIT variant; `detail` reads its string.
            #[allow(unused_variables)]
            pub(crate) fn from_wit(index: u8, detail: impl FnOnce() -> String) -> Self {
                match index {
                    $( $index => wit_error!(@build detail $case $($payload)?), )*
                    other => $crate::abi::invalid("error variant", other),
                }
            }

            /// Takes the error the host wrote (and its string, for cases with one).
            pub(crate) fn lift(raw: $crate::abi::RawError) -> Self {
                // SAFETY: only cases with a payload read it, and each error is lifted once.
                Self::from_wit(raw.case, || unsafe { $crate::abi::take_string(raw.text) })
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.detail() {
                    Some(detail) => write!(f, "{}: {}", self.case(), detail),
                    None => f.write_str(self.case()),
                }
            }
        }

        impl ::std::error::Error for $name {}
    };
    (@detail $self:ident $case:ident $payload:ty) => {
        match $self {
            Self::$case(detail) => Some(detail.as_str()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    };
    (@detail $self:ident $case:ident) => { None };
    (@build $detail:ident $case:ident $payload:ty) => { Self::$case($detail()) };
    (@build $detail:ident $case:ident) => { Self::$case };
}
