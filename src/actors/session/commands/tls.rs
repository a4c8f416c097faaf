//! TLS on the control connection: AUTH TLS and PROT (RFC 4217).

use crate::actors::session::Session;
use crate::codec::{Reply, ReplyCode};

impl Session {
    /// AUTH TLS (RFC 4217 §4): 234, then the TLS handshake once the reply is on the wire.
    pub(super) fn auth(&mut self, text: &str, mechanism: &str) {
        let reply = match (&self.env.tls, mechanism) {
            (None, _) => Reply::new(
                ReplyCode::PolicyDenied,
                "TLS is not configured on this server.",
            ),
            (Some(_), _) if self.control.is_tls() => {
                Reply::new(ReplyCode::BadSequence, "TLS is already on.")
            }
            (Some(tls), "TLS" | "TLS-C" | "SSL" | "TLS-P") => {
                let tls = tls.clone();
                self.finish(text, Reply::new(ReplyCode::AuthOk, "AUTH TLS successful."));
                self.control.start_tls(tls);
                return;
            }
            (Some(_), _) => Reply::new(
                ReplyCode::NotImplementedForParameter,
                "Only AUTH TLS is supported.",
            ),
        };
        self.finish(text, reply);
    }

    /// PROT (RFC 4217 §9): C or P after PBSZ.
    pub(super) fn prot(&mut self, text: &str, level: char) {
        let reply = match level {
            _ if !self.pbsz => Reply::new(ReplyCode::BadSequence, "PROT needs PBSZ first."),
            'C' | 'P' => {
                self.prot_private = level == 'P';
                Reply::new(ReplyCode::Ok, format!("Protection level set to {level}."))
            }
            _ => Reply::new(
                ReplyCode::ProtNotSupported,
                "Only PROT C and PROT P are supported.",
            ),
        };
        self.finish(text, reply);
    }
}
