//! What an operator watches a running server with: the admin HTTP listener ([`http`]) with
//! the health and readiness checks, the metrics ([`crate::audit::metrics`]) and the live
//! sessions, and the status page ([`status`]).

pub mod http;
pub mod status;
