//! Directories the agent connects to: Active Directory and OpenLDAP over LDAP(S).
//!
//! The only module that knows `ldap3`. [`conn`] opens, binds, reads the rootDSE (dialect and base
//! DN) and searches; [`account`] is the install wizard's service-account step (create or verify the
//! account, delegate its rights); [`escape`] makes untrusted names safe in filters and DNs; every
//! failure is a [`DirectoryError`] whose message names the cause.

pub mod account;
pub mod conn;
pub mod content_sync;
mod error;
pub mod escape;
pub mod password;
pub mod sd;

pub use conn::{Dialect, Target};
pub use error::DirectoryError;
