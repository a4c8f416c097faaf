//! ferry: a multi-user FTP server (`ferryd`) on actix actors.
//!
//! - [`config`]: every setting and its default; the command-line flags over the TOML file.
//! - [`codec`]: bytes <-> protocol values; pure.
//! - [`actors`]: the actors (accounts, audit log) and their messages.
//! - [`server`]: start and stop a whole server.
//! - [`wiring`]: the backends built from the configuration, for the server and the operator
//!   commands.
//! - [`client`]: the `ferry` FTP client (protocol, commands, line editing).
//! - [`admin`]: operator commands for `ferryd user`, `ferryd invite` and `ferryd log`.
pub mod actors;
pub mod admin;
pub mod client;
pub mod codec;
pub mod config;
pub mod server;
pub mod table;
pub mod tls;
pub mod wiring;
