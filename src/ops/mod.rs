//! What an operator watches a running server with: its metrics, counted from the audit
//! events ([`metrics`]), and the admin HTTP listener that serves them with the health and
//! readiness checks ([`http`]).

pub mod http;
pub mod metrics;
