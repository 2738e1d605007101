//! Amazon DynamoDB, limited to the function's `dynamodb_tables` (WIT `dynamodb`).
//!
//! Keys and items cross as DynamoDB-JSON text, e.g. `{"pk": {"S": "user#1"}}`.

use crate::abi::{self, RetArea};
use crate::bindings::dynamodb as ffi;

wit_error! {
    /// Why a DynamoDB call failed (WIT `dynamodb.error`).
    pub enum Error {
        /// The table is not in the function's `dynamodb_tables`, or access was refused.
        0 => Denied(String) = "denied",
        /// DynamoDB could not be reached or failed.
        1 => Unavailable(String) = "unavailable",
        /// The key or item was not valid DynamoDB-JSON, or was rejected.
        2 => InvalidArgument(String) = "invalid-argument",
    }
}

/// Reads an item by its key; `None` when it does not exist.
pub fn get_item(table: &str, key: &str) -> Result<Option<String>, Error> {
    let mut area = RetArea::<16>::new();
    unsafe { ffi::get_item(table.as_ptr(), table.len(), key.as_ptr(), key.len(), area.ptr()) };
    area.result(4, |a, at| a.option(at, at + 4, |a, p| unsafe { abi::take_string(a.slice(p)) }))
        .map_err(Error::lift)
}

/// Writes an item, replacing any existing item with the same key.
pub fn put_item(table: &str, item: &str) -> Result<(), Error> {
    let mut area = RetArea::<16>::new();
    unsafe { ffi::put_item(table.as_ptr(), table.len(), item.as_ptr(), item.len(), area.ptr()) };
    area.result(4, |_, _| ()).map_err(Error::lift)
}

/// Deletes an item by its key; deleting an absent item is not an error.
pub fn delete_item(table: &str, key: &str) -> Result<(), Error> {
    let mut area = RetArea::<16>::new();
    unsafe { ffi::delete_item(table.as_ptr(), table.len(), key.as_ptr(), key.len(), area.ptr()) };
    area.result(4, |_, _| ()).map_err(Error::lift)
}

/// Writes an item only when `condition` (a DynamoDB condition expression) holds; `values`
/// are its expression attribute values as DynamoDB-JSON (`"{}"` for none). `Ok(false)`
/// when the condition failed.
pub fn put_item_if(table: &str, item: &str, condition: &str, values: &str) -> Result<bool, Error> {
    let mut area = RetArea::<16>::new();
    unsafe {
        ffi::put_item_if(
            table.as_ptr(),
            table.len(),
            item.as_ptr(),
            item.len(),
            condition.as_ptr(),
            condition.len(),
            values.as_ptr(),
            values.len(),
            area.ptr(),
        )
    };
    area.result(4, |a, at| a.u8(at) != 0).map_err(Error::lift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_case() {
        assert_eq!(Error::from_wit(0, || "t".into()).to_string(), "denied: t");
    }
}
