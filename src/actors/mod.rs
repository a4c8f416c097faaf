//! The actor graph.
//!
//! ```text
//! Session --Register/Authenticate/ChangePassword--> AccountRegistry (SyncArbiter: PBKDF2)
//! Session --Record(Event), Flush------------------> AuditLog (own Arbiter: file appends)
//! ```
pub mod account_registry;
pub mod audit_log;
