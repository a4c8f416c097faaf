//! ferry: a multi-user FTP server (`ferryd`) on actix actors.
//!
//! - [`config`]: every setting and its default; the command-line flags over the TOML file.
//! - [`codec`]: bytes <-> protocol values; pure.
//! - [`net`]: a connection before FTP: the client's address, the preamble (implicit TLS).
//! - [`actors`]: the actors (accounts, audit log) and their messages.
//! - [`state`]: the state the nodes of a cluster share (bans, leases, locks), in process here.
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
pub mod net;
pub mod server;
pub mod state;
pub mod table;
pub mod tls;
pub mod wiring;
