//! ferry: a multi-user FTP server (`ferryd`) and a line-oriented FTP client (`ferry`) on actix
//! actors. One line per module, in dependency order: each imports only modules above it.
//!
//! - [`config`]: every setting, limit and timeout with its default (and the account [`Quota`]
//!   limits); the command-line flags over the TOML file.
//! - [`codec`]: bytes <-> protocol values (commands, replies, framing, listing lines and the
//!   entries they show, glob patterns, passwords); pure, imports no actor.
//! - [`tls`]: TLS configs for server and client, self-signed certificates, the handshake limit.
//! - [`net`]: a connection before FTP: the client's address, the preamble (PROXY header,
//!   implicit TLS) and its bounds, urgent-data reads.
//! - [`db`]: PostgreSQL for a cluster: the pool on its own runtime, numbered migrations
//!   under an advisory lock, the node's row and heartbeat, a test server.
//! - [`state`]: the state the nodes of a cluster share (bans, leases, locks, quota
//!   reservations) behind one trait: in process, or in the cluster's database.
//! - [`json_file`]: small JSON records written whole (a temp file beside the target first).
//! - [`quota`]: per-user quotas: the usage ledger, changes under the user's lock, the charge of
//!   a running upload, recounts (by a `UsageCounter`: a directory walk, or a bucket listing).
//! - [`accounts`]: accounts below the actor: the name rule ([`UserName`](accounts::UserName))
//!   and [`AuthError`](accounts::AuthError) the client shares, the `AccountStore` trait and its
//!   JSON store, password hashing, invitations.
//! - [`admission`]: the live sessions under their caps (in all, per address through the
//!   shared state) and the messages sent to them (shutdown, a ban of their address).
//! - [`audit`]: audit events, their sinks (`audit.jsonl`, xferlog, the `audit_log` table)
//!   with rotation, the noise policy, and the metrics counted from the events.
//! - [`storage`]: the async, object-safe `Storage` trait with its byte sources and sinks,
//!   errors, capabilities, digests and confined paths; the local backend (jail, staging,
//!   in-place uploads); the memory backend the tests run beside it; the S3 backend (marker
//!   directories, multipart uploads, rewrites for APPE and REST, copy-then-delete renames).
//! - [`transfer`]: data connections (passive, active, the peer check, TLS) and the transfer
//!   tasks on their own thread pool: streaming, zero-copy, ASCII conversion.
//! - [`actors`]: the actor graph and its messages: acceptor, session (control channel;
//!   commands/ by group), account_registry, file_store (the actor in front of the storage),
//!   audit_log (batching events into the sinks).
//! - [`ops`]: the admin HTTP listener (`/health`, `/ready`, `/metrics`, `/sessions`).
//! - [`table`]: plain-text tables for the operator commands and the client.
//! - [`wiring`]: the backends built from the configuration, for the server and the operator
//!   commands.
//! - [`server`]: start and stop a whole server.
//! - [`admin`]: operator commands for `ferryd user`, `ferryd invite`, `ferryd log` and quotas.
//! - [`client`]: the `ferry` FTP client (protocol, commands, rendering, line editing).
//! - [`packaging`]: the binaries' shell completions and man pages, behind hidden flags.
//!
//! [`Quota`]: config::Quota
pub mod accounts;
pub mod actors;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod client;
pub mod codec;
pub mod config;
pub mod db;
pub mod json_file;
pub mod net;
pub mod ops;
pub mod packaging;
pub mod quota;
pub mod server;
pub mod state;
pub mod storage;
pub mod table;
pub mod tls;
pub mod transfer;
pub mod wiring;
