//! Information about the server: FEAT, OPTS, HELP (RFC 2389, RFC 959 §4.1.3). What they list
//! follows the storage backend's capabilities.

use crate::actors::session::Session;
use crate::codec::command::{Opts, VERBS};
use crate::codec::listing::Facts;
use crate::codec::{Reply, ReplyCode};
use crate::storage::HashAlgo;

impl Session {
    pub(super) fn feat(&mut self, text: &str) {
        // RFC 2389 §3.2: each feature line starts with a space. Exactly what is implemented.
        let hashes: Vec<String> = HashAlgo::ALL
            .iter()
            .map(|a| {
                let star = if *a == self.settings.hash_algo {
                    "*"
                } else {
                    ""
                };
                format!("{}{star}", a.name())
            })
            .collect();
        let mut lines = vec!["Features:".to_owned()];
        if self.env.tls.is_some() {
            lines.push(" AUTH TLS".to_owned());
        }
        lines.extend([
            " EPRT".to_owned(),
            " EPSV".to_owned(),
            format!(" HASH {}", hashes.join(";")),
            " MDTM".to_owned(),
        ]);
        if self.env.capabilities.set_mtime {
            lines.push(" MFMT".to_owned());
        }
        lines.extend([
            format!(" MLST {}", self.settings.facts.feat_line()),
            " PASV".to_owned(),
        ]);
        if self.env.tls.is_some() {
            lines.extend([" PBSZ".to_owned(), " PROT".to_owned()]);
        }
        lines.extend([
            " REST STREAM".to_owned(),
            " SIZE".to_owned(),
            " UTF8".to_owned(),
            "End".to_owned(),
        ]);
        self.finish(text, Reply::multi(ReplyCode::SystemStatus, lines));
    }

    pub(super) fn opts(&mut self, text: &str, opts: Opts) {
        let reply = match opts {
            // RFC 2640: names are always UTF-8 here, so both settings are accepted.
            Opts::Utf8(_) => Reply::new(ReplyCode::Ok, "Always in UTF8 mode."),
            Opts::Mlst(names) => {
                self.settings.facts = Facts::select(&names);
                Reply::new(
                    ReplyCode::Ok,
                    format!("MLST OPTS {}", self.settings.facts.names()),
                )
            }
            // draft-bryan-ftpext-hash §3.2: without an argument, name the selected algorithm.
            Opts::Hash(None) => Reply::new(ReplyCode::Ok, self.settings.hash_algo.name()),
            Opts::Hash(Some(name)) => match HashAlgo::from_name(&name) {
                Some(algo) => {
                    self.settings.hash_algo = algo;
                    Reply::new(ReplyCode::Ok, algo.name())
                }
                None => Reply::new(ReplyCode::BadArguments, "Unknown algorithm."),
            },
            Opts::Other(o) => Reply::new(
                ReplyCode::BadArguments,
                format!("Option not understood: {o}"),
            ),
        };
        self.finish(text, reply);
    }

    pub(super) fn help(&mut self, text: &str, topic: Option<String>) {
        let reply = match topic.as_deref() {
            None => {
                let mut lines = vec!["The following commands are recognized:".to_owned()];
                for chunk in VERBS.chunks(8) {
                    let names: Vec<&str> = chunk.iter().map(|(v, _)| *v).collect();
                    lines.push(format!(" {}", names.join(" ")));
                }
                lines.push("Use HELP <verb> for its syntax, HELP SITE for SITE commands.".into());
                Reply::multi(ReplyCode::Help, lines)
            }
            Some("SITE") => super::login::site_help(self.env.capabilities),
            Some(verb) => match VERBS.iter().find(|(v, _)| *v == verb) {
                Some((_, syntax)) => Reply::new(ReplyCode::Help, format!("Syntax: {syntax}")),
                None => Reply::new(ReplyCode::BadArguments, format!("Unknown command {verb}.")),
            },
        };
        self.finish(text, reply);
    }
}
