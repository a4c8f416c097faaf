//! ferry: a multi-user FTP server (`ferryd`) on actix actors.
pub mod actors;
pub mod codec;
pub mod config;
