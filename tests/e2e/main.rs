//! The end-to-end tests, one module per area, in one test binary: they share the `common`
//! harness, which cargo would otherwise compile and link once per `tests/*.rs` binary. Run one
//! area or one test with a name filter, e.g. `cargo test --test e2e tls::` or
//! `cargo test --test e2e attack_auth::`.

mod common;

mod attack_auth;
mod attack_jail;
mod attack_logs;
mod attack_paths;
mod attack_quota;
mod attack_resources;
mod client_launch;
mod client_mirror;
mod client_peers;
mod client_pty;
mod client_script;
mod client_sync;
mod client_vsftpd;
mod cluster;
mod cluster_accounts;
mod cluster_audit;
mod cluster_state;
mod defences;
mod ftp_clients;
mod hostile;
mod interop;
mod listing;
mod ops;
mod packaging;
mod protocol;
mod proxy;
mod quota;
mod resume;
mod s3;
mod server;
mod tls;
