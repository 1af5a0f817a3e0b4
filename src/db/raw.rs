//! Reading a query's rows in place, on a pooled connection's own SQLite handle.
//!
//! The one place in the crate with `unsafe` code, kept to this file and behind a safe interface.
//! It exists for one job: loading the fleet at start-up. Decoding 100,000 rows through sqlx copies
//! every value and crosses a channel per row, which takes seconds; stepping the statement here and
//! lending each row's values to a callback takes tens of milliseconds.
#![allow(unsafe_code)]

use libsqlite3_sys as ffi;
use sqlx::SqlitePool;
use std::ffi::{c_int, CStr};
use std::marker::PhantomData;

/// The row a statement is on. Its values borrow SQLite's buffers, valid until the next step; the
/// lifetime keeps them from outliving the callback they are lent to.
pub struct Row<'stmt> {
    stmt: *mut ffi::sqlite3_stmt,
    _row: PhantomData<&'stmt ()>,
}

impl<'stmt> Row<'stmt> {
    /// Column `i` as bytes (text or blob); None for NULL.
    pub fn bytes(&self, i: c_int) -> Option<&'stmt [u8]> {
        // SAFETY: `stmt` is on a row for as long as `self` exists (`Row` is only lent to the
        // callback between two steps) and `'stmt` cannot outlive the callback. Pointer first,
        // then length, is the order SQLite documents.
        unsafe {
            if ffi::sqlite3_column_type(self.stmt, i) == ffi::SQLITE_NULL {
                return None;
            }
            let ptr = ffi::sqlite3_column_blob(self.stmt, i).cast::<u8>();
            let len = usize::try_from(ffi::sqlite3_column_bytes(self.stmt, i)).unwrap_or(0);
            Some(if ptr.is_null() || len == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(ptr, len)
            })
        }
    }

    /// Column `i` as text; None for NULL, an error for bytes that are not UTF-8.
    pub fn text(&self, i: c_int) -> sqlx::Result<Option<&'stmt str>> {
        // SAFETY: as in `bytes`. sqlite3_column_text returns NULL only for a NULL value (or when
        // out of memory, which then reads as NULL), so one call replaces the type check.
        let bytes = unsafe {
            let ptr = ffi::sqlite3_column_text(self.stmt, i);
            if ptr.is_null() {
                return Ok(None);
            }
            let len = usize::try_from(ffi::sqlite3_column_bytes(self.stmt, i)).unwrap_or(0);
            std::slice::from_raw_parts(ptr, len)
        };
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| sqlx::Error::Protocol(format!("column {i} holds text that is not UTF-8")))
    }

    /// Column `i` as an integer; None for NULL.
    pub fn int(&self, i: c_int) -> Option<i64> {
        // SAFETY: as in `bytes`.
        unsafe {
            (ffi::sqlite3_column_type(self.stmt, i) != ffi::SQLITE_NULL)
                .then(|| ffi::sqlite3_column_int64(self.stmt, i))
        }
    }
}

/// Finalizes the statement however the read ends.
struct Statement(*mut ffi::sqlite3_stmt);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sqlite3_prepare_v2 and is finalized once, here.
        unsafe { ffi::sqlite3_finalize(self.0) };
    }
}

fn failure(db: *mut ffi::sqlite3, what: &str) -> sqlx::Error {
    // SAFETY: `db` is an open connection; sqlite3_errmsg returns a NUL-terminated string owned by
    // SQLite, copied here before any other call on the connection.
    let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }.to_string_lossy();
    sqlx::Error::Protocol(format!("{what}: {message}"))
}

/// Runs `sql` (one statement, no parameters) and calls `each` with every row, in order. Stops at
/// the first error, from SQLite or from `each`.
pub async fn for_each_row(
    pool: &SqlitePool,
    sql: &CStr,
    mut each: impl FnMut(&Row<'_>) -> sqlx::Result<()>,
) -> sqlx::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let mut raw = std::ptr::null_mut();
    // SAFETY: `db` is a live connection, held exclusively through `handle` until this returns;
    // `sql` is NUL-terminated.
    let rc =
        unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut raw, std::ptr::null_mut()) };
    if rc != ffi::SQLITE_OK {
        return Err(failure(db, "cannot prepare the statement"));
    }
    let stmt = Statement(raw);
    loop {
        // SAFETY: `stmt` is a prepared statement of `db`, which is still held.
        match unsafe { ffi::sqlite3_step(stmt.0) } {
            ffi::SQLITE_ROW => each(&Row {
                stmt: stmt.0,
                _row: PhantomData,
            })?,
            ffi::SQLITE_DONE => return Ok(()),
            _ => return Err(failure(db, "cannot read the rows")),
        }
    }
}
