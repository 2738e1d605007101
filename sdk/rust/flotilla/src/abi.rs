//! The component model's canonical ABI, by hand, for the few shapes this world uses.
//!
//! wit-bindgen's generator is not available offline, so this module does what its output
//! would: read results the host wrote into a return area, take ownership of memory the host
//! allocated through `cabi_realloc`, and lay out what goes back (lists of string pairs, the
//! export's return area). Layouts follow the Canonical ABI for wasm32: discriminants are one
//! byte, a payload starts at the next multiple of the largest alignment among the cases,
//! strings and lists are `(address, length)` pairs of `u32`.
//!
//! The layout readers and writers work on plain bytes and `u32` addresses so they can be
//! unit-tested on any target; only the `take_*` functions touch raw memory.

use std::alloc::{self, Layout};

/// An address in the guest's linear memory, as the canonical ABI passes it (wasm32).
pub type Addr = u32;

/// A string or list as the canonical ABI passes it: its address and element count.
pub type Slice = (Addr, u32);

/// Bytes the host writes an import's results into; aligned for any result of this world.
#[repr(C, align(8))]
pub struct RetArea<const N: usize>(pub [u8; N]);

impl<const N: usize> RetArea<N> {
    /// A zeroed area.
    pub const fn new() -> Self {
        RetArea([0; N])
    }

    /// The pointer the import writes through.
    pub fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    /// The byte at `at` (a discriminant, a `bool`).
    pub fn u8(&self, at: usize) -> u8 {
        self.0[at]
    }

    /// The little-endian `u16` at `at`.
    pub fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }

    /// The little-endian `u32` at `at`.
    pub fn u32(&self, at: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(b)
    }

    /// The little-endian `i64` at `at`.
    pub fn i64(&self, at: usize) -> i64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        i64::from_le_bytes(b)
    }

    /// The `(address, length)` of a string or list stored at `at`.
    pub fn slice(&self, at: usize) -> Slice {
        (self.u32(at), self.u32(at + 4))
    }

    /// Stores a little-endian `u32` at `at`.
    pub fn put_u32(&mut self, at: usize, value: u32) {
        self.0[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Stores a string or list's `(address, length)` at `at`.
    pub fn put_slice(&mut self, at: usize, (addr, len): Slice) {
        self.put_u32(at, addr);
        self.put_u32(at + 4, len);
    }

    /// Reads `result<T, error>` whose payload starts at `payload`: `ok` reads the success
    /// payload; an error comes back raw (its case and string payload) for the interface
    /// to lift into its own enum.
    pub fn result<T>(
        &self,
        payload: usize,
        ok: impl FnOnce(&Self, usize) -> T,
    ) -> Result<T, RawError> {
        match self.u8(0) {
            0 => Ok(ok(self, payload)),
            1 => Err(RawError::read(self, payload)),
            other => invalid("result", other),
        }
    }

    /// Reads `option<T>` whose discriminant is at `at` and payload at `payload`.
    pub fn option<T>(
        &self,
        at: usize,
        payload: usize,
        some: impl FnOnce(&Self, usize) -> T,
    ) -> Option<T> {
        match self.u8(at) {
            0 => None,
            1 => Some(some(self, payload)),
            other => invalid("option", other),
        }
    }
}

impl<const N: usize> Default for RetArea<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// An interface's `error` variant as the host wrote it: the case index and, for cases that
/// carry a string, where that string is (unread: only cases with a payload own memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawError {
    /// Index of the case in the WIT variant.
    pub case: u8,
    /// The case's string payload (meaningless for cases without one).
    pub text: Slice,
}

impl RawError {
    /// Reads a variant of string-or-nothing cases at `at` (payload 4 bytes further).
    pub fn read<const N: usize>(area: &RetArea<N>, at: usize) -> Self {
        RawError { case: area.u8(at), text: area.slice(at + 4) }
    }
}

/// The host broke the canonical ABI (a discriminant out of range): nothing sane is left to do.
#[cold]
pub fn invalid(what: &str, value: u8) -> ! {
    panic!("flotilla: the host returned an invalid {what} discriminant {value}")
}

/// An entry of `list<tuple<string, string>>` in memory: two `(address, length)` pairs.
pub type PairEntry = [usize; 4];

/// Lays out string pairs as `list<tuple<string, string>>` entries pointing into `pairs`
/// (valid while `pairs` is). On wasm32 each entry is 16 bytes, 4-aligned: the ABI's layout.
pub fn lower_pairs<A: AsRef<str>, B: AsRef<str>>(pairs: &[(A, B)]) -> Vec<PairEntry> {
    pairs
        .iter()
        .map(|(a, b)| {
            let (a, b) = (a.as_ref(), b.as_ref());
            [a.as_ptr() as usize, a.len(), b.as_ptr() as usize, b.len()]
        })
        .collect()
}

/// The byte size of `result<response, string>` as `handle` returns it.
pub const HANDLE_RESULT_SIZE: usize = 24;

/// Writes `ok(response)` into `handle`'s return area: discriminant 0, status at 4, headers
/// at 8, body at 16.
pub fn write_ok(area: &mut RetArea<HANDLE_RESULT_SIZE>, status: u16, headers: Slice, body: Slice) {
    area.0 = [0; HANDLE_RESULT_SIZE];
    area.0[4..6].copy_from_slice(&status.to_le_bytes());
    area.put_slice(8, headers);
    area.put_slice(16, body);
}

/// Writes `err(message)` into `handle`'s return area: discriminant 1, the string at 4.
pub fn write_err(area: &mut RetArea<HANDLE_RESULT_SIZE>, message: Slice) {
    area.0 = [0; HANDLE_RESULT_SIZE];
    area.0[0] = 1;
    area.put_slice(4, message);
}

/// The address of `ptr` as the canonical ABI passes it (exact on wasm32).
pub fn addr<T>(ptr: *const T) -> Addr {
    ptr as usize as Addr
}

/// Takes ownership of a `list<u8>` the host allocated through `cabi_realloc`.
///
/// # Safety
/// `raw` must be a list the host handed over (allocated with alignment at most 8 by
/// `cabi_realloc`), not yet taken.
pub unsafe fn take_bytes((ptr, len): Slice) -> Vec<u8> {
    if len == 0 {
        return Vec::new(); // the address may be a dangling 1 (or 0): never free it
    }
    // SAFETY: the host allocated `len` bytes at `ptr` with our allocator (cabi_realloc);
    // std's wasi allocator is malloc/free, which do not depend on the layout given back.
    unsafe { Vec::from_raw_parts(ptr as usize as *mut u8, len as usize, len as usize) }
}

/// Takes ownership of a `string` the host allocated (UTF-8; repaired lossily if not).
///
/// # Safety
/// As for [`take_bytes`].
pub unsafe fn take_string(raw: Slice) -> String {
    // The host only lowers valid UTF-8; checking costs a pass over short strings and keeps
    // `String`'s guarantee even against a broken host.
    match String::from_utf8(unsafe { take_bytes(raw) }) {
        Ok(text) => text,
        Err(bad) => String::from_utf8_lossy(bad.as_bytes()).into_owned(),
    }
}

/// Takes ownership of a `list<tuple<string, string>>` the host allocated.
///
/// # Safety
/// As for [`take_bytes`]; the entries' strings are taken too.
pub unsafe fn take_pairs((ptr, len): Slice) -> Vec<(String, String)> {
    if len == 0 {
        return Vec::new();
    }
    let count = len as usize;
    // SAFETY: the host wrote `count` 16-byte entries of four u32 at `ptr` (4-aligned).
    let entries = unsafe { std::slice::from_raw_parts(ptr as usize as *const [Addr; 4], count) };
    let pairs = entries
        .iter()
        .map(|e| unsafe { (take_string((e[0], e[1])), take_string((e[2], e[3]))) })
        .collect();
    // SAFETY: the array itself was one allocation of count * 16 bytes, alignment 4.
    unsafe {
        alloc::dealloc(ptr as usize as *mut u8, Layout::from_size_align_unchecked(count * 16, 4))
    };
    pairs
}

/// `cabi_realloc`: the allocator the host uses to hand memory to the guest.
///
/// # Safety
/// Called by the host per the canonical ABI: `old` is null with `old_len` 0, or a block
/// this function returned with that size and alignment.
pub unsafe fn realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    let new = unsafe {
        if old_len == 0 {
            if new_len == 0 {
                return align as *mut u8; // a dangling, aligned pointer for empty lists
            }
            alloc::alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            let layout = Layout::from_size_align_unchecked(old_len, align);
            if new_len == 0 {
                alloc::dealloc(old, layout);
                return align as *mut u8;
            }
            alloc::realloc(old, layout, new_len)
        }
    };
    if new.is_null() {
        out_of_memory();
    }
    new
}

/// Traps without printing: the allocator failed, so formatting a message could fail too.
#[cold]
fn out_of_memory() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area<const N: usize>(bytes: &[(usize, &[u8])]) -> RetArea<N> {
        let mut a = RetArea::<N>::new();
        for (at, b) in bytes {
            a.0[*at..*at + b.len()].copy_from_slice(b);
        }
        a
    }

    #[test]
    fn reads_little_endian_fields() {
        let a: RetArea<24> = area(&[
            (0, &[7]),
            (4, &0xBEEFu16.to_le_bytes()),
            (8, &(-5i64).to_le_bytes()),
            (16, &0x1234_5678u32.to_le_bytes()),
            (20, &9u32.to_le_bytes()),
        ]);
        assert_eq!((a.u8(0), a.u16(4), a.i64(8)), (7, 0xBEEF, -5));
        assert_eq!(a.slice(16), (0x1234_5678, 9));
    }

    #[test]
    fn result_of_option_list_ok_some() {
        // result<option<list<u8>>, error>: disc 0, option disc at 4, list at 8.
        let a: RetArea<16> =
            area(&[(0, &[0]), (4, &[1]), (8, &100u32.to_le_bytes()), (12, &3u32.to_le_bytes())]);
        assert_eq!(
            a.result(4, |a, at| a.option(at, at + 4, |a, p| a.slice(p))),
            Ok(Some((100, 3)))
        );
    }

    #[test]
    fn result_of_option_ok_none_and_err() {
        let none: RetArea<16> = area(&[(0, &[0]), (4, &[0])]);
        assert_eq!(none.result(4, |a, at| a.option(at, at + 4, |a, p| a.slice(p))), Ok(None));
        let err: RetArea<16> =
            area(&[(0, &[1]), (4, &[1]), (8, &64u32.to_le_bytes()), (12, &2u32.to_le_bytes())]);
        let got = err.result(4, |a, at| a.option(at, at + 4, |a, p| a.slice(p)));
        assert_eq!(got, Err(RawError { case: 1, text: (64, 2) }));
    }

    #[test]
    fn result_of_s64_uses_eight_byte_alignment() {
        // result<s64, error>: payload at 8; the error variant's string at 12.
        let ok: RetArea<24> = area(&[(0, &[0]), (8, &i64::MIN.to_le_bytes())]);
        assert_eq!(ok.result(8, |a, at| a.i64(at)), Ok(i64::MIN));
        let err: RetArea<24> =
            area(&[(0, &[1]), (8, &[0]), (12, &40u32.to_le_bytes()), (16, &5u32.to_le_bytes())]);
        assert_eq!(err.result(8, |a, at| a.i64(at)), Err(RawError { case: 0, text: (40, 5) }));
    }

    #[test]
    fn result_of_bool_reads_any_nonzero_as_true() {
        let yes: RetArea<16> = area(&[(0, &[0]), (4, &[2])]);
        assert_eq!(yes.result(4, |a, at| a.u8(at) != 0), Ok(true));
    }

    #[test]
    #[should_panic(expected = "invalid result discriminant 2")]
    fn bad_discriminant_panics() {
        let a: RetArea<16> = area(&[(0, &[2])]);
        let _ = a.result(4, |_, _| ());
    }

    #[test]
    fn handle_result_layout() {
        let mut a = RetArea::<HANDLE_RESULT_SIZE>::new();
        write_ok(&mut a, 404, (0x10, 2), (0x20, 5));
        let mut expected = [0u8; 24];
        expected[4..6].copy_from_slice(&404u16.to_le_bytes());
        expected[8..12].copy_from_slice(&0x10u32.to_le_bytes());
        expected[12..16].copy_from_slice(&2u32.to_le_bytes());
        expected[16..20].copy_from_slice(&0x20u32.to_le_bytes());
        expected[20..24].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(a.0, expected);
        write_err(&mut a, (0x30, 7));
        assert_eq!((a.u8(0), a.slice(4), a.u16(12)), (1, (0x30, 7), 0));
    }

    #[test]
    fn pairs_point_into_their_strings() {
        let pairs = [("a", String::from("bc")), ("", String::new())];
        let lowered = lower_pairs(&pairs);
        assert_eq!(lowered.len(), 2);
        assert_eq!(lowered[0], [pairs[0].0.as_ptr() as usize, 1, pairs[0].1.as_ptr() as usize, 2]);
        assert_eq!((lowered[1][1], lowered[1][3]), (0, 0));
    }

    #[test]
    fn realloc_allocates_grows_and_frees() {
        unsafe {
            assert_eq!(realloc(std::ptr::null_mut(), 0, 4, 0) as usize, 4);
            let p = realloc(std::ptr::null_mut(), 0, 8, 16);
            assert_eq!(p as usize % 8, 0);
            p.write_bytes(0xAB, 16);
            let q = realloc(p, 16, 8, 64);
            assert_eq!(std::slice::from_raw_parts(q, 16), &[0xAB; 16]);
            assert_eq!(realloc(q, 64, 8, 0) as usize, 8);
        }
    }

    #[test]
    fn empty_slices_take_nothing() {
        unsafe {
            assert!(take_bytes((1, 0)).is_empty());
            assert!(take_string((0, 0)).is_empty());
            assert!(take_pairs((4, 0)).is_empty());
        }
    }
}
