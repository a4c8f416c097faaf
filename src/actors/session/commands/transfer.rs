//! Data connections and transfers: PASV/EPSV, PORT/EPRT, RETR, STOR/APPE/STOU, ABOR
//! (RFC 959 §3.2-3.3, RFC 2428).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use actix::prelude::*;

use super::Next;
use crate::actors::Services;
use crate::actors::audit_log::Record;
use crate::actors::file_store::{OpenRead, OpenWrite};
use crate::actors::session::replies::{self, Limit, Unsupported};
use crate::actors::session::{Running, Session, TransferKind};
use crate::codec::{Reply, ReplyCode};
use crate::state::{self, Direction};
use crate::storage::{ByteSink, ByteSource, StoreError, WriteMode};
use crate::transfer::{self, DataPlan, Job};

impl Session {
    pub(super) fn pasv(&mut self, text: &str, extended: bool) {
        if self.settings.epsv_all && !extended {
            self.finish(text, replies::only_epsv());
            return;
        }
        let local_ip = self.peer.local().ip();
        let announced = match (extended, self.env.config.get().passive_address, local_ip) {
            (true, _, _) => None,
            (false, Some(std::net::IpAddr::V4(v4)), _) => Some(v4),
            (false, _, std::net::IpAddr::V4(v4)) => Some(v4),
            (false, _, std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Some(v4),
                None => {
                    self.finish(
                        text,
                        Reply::new(
                            ReplyCode::CantOpenData,
                            "PASV is IPv4 only; use EPSV over IPv6.",
                        ),
                    );
                    return;
                }
            },
        };
        let listener = match transfer::bind_passive(local_ip, self.env.config.get().passive_ports) {
            Ok(l) => l,
            Err(e) => {
                session_log!(warn, self, "no passive port: {e}");
                self.finish(
                    text,
                    Reply::new(ReplyCode::CantOpenData, "No passive port available."),
                );
                return;
            }
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => {
                session_log!(warn, self, "passive listener: {e}");
                self.finish(
                    text,
                    Reply::new(ReplyCode::CantOpenData, "Cannot open data connection."),
                );
                return;
            }
        };
        // Under PROT P the connection is taken, and a TLS handshake the client starts before
        // its transfer command is answered, as soon as the connection arrives.
        self.settings.data = Some(
            match self.env.upload_tls.as_ref().filter(|_| self.prot_private) {
                Some(tls) => DataPlan::Prepared(transfer::prepare(
                    &self.env.transfers,
                    listener,
                    self.channel(),
                    self.protection(tls),
                )),
                None => DataPlan::Passive(listener),
            },
        );
        let reply = match announced {
            None => Reply::new(
                ReplyCode::ExtendedPassiveMode,
                format!("Entering Extended Passive Mode (|||{port}|)."),
            ),
            Some(ip) => {
                let [a, b, c, d] = ip.octets();
                Reply::new(
                    ReplyCode::PassiveMode,
                    format!(
                        "Entering Passive Mode ({a},{b},{c},{d},{},{}).",
                        port >> 8,
                        port & 0xff
                    ),
                )
            }
        };
        self.finish(text, reply);
    }

    /// The RFC 2428 network protocol of the control connection: 1 (IPv4, also when mapped
    /// into IPv6) or 2 (IPv6).
    pub(super) fn network_protocol(&self) -> u8 {
        if transfer::canonical(self.peer.local().ip()).is_ipv4() {
            1
        } else {
            2
        }
    }

    /// Whether the server listens on `ip`'s network protocol: an IPv4 address, or an
    /// unspecified IPv6 one (dual-stack), takes IPv4; any IPv6 address takes IPv6.
    pub(super) fn listens_on(&self, ip: std::net::IpAddr) -> bool {
        let config = &self.env.config.get();
        let mut listeners = config.listen.iter().chain(&config.implicit_tls_listen);
        if ip.is_ipv4() {
            listeners.any(|a| a.is_ipv4() || a.ip().is_unspecified())
        } else {
            listeners.any(std::net::SocketAddr::is_ipv6)
        }
    }

    /// The network protocols the server listens on, as a `522` names them (RFC 2428 §2, §3).
    pub(in crate::actors::session) fn protocols(&self) -> &'static str {
        let v4 = std::net::Ipv4Addr::UNSPECIFIED.into();
        let v6 = std::net::Ipv6Addr::UNSPECIFIED.into();
        match (self.listens_on(v4), self.listens_on(v6)) {
            (true, false) => "1",
            (false, true) => "2",
            _ => "1,2",
        }
    }

    /// Checks that a data connection was prepared; 425 otherwise (RFC 959 §5.4).
    pub(super) fn need_data(&mut self, text: &str) -> bool {
        if self.settings.data.is_none() {
            self.finish(
                text,
                Reply::new(
                    ReplyCode::CantOpenData,
                    "Use PASV, EPSV, PORT or EPRT first.",
                ),
            );
            return false;
        }
        true
    }

    pub(super) fn retr(&mut self, text: String, arg: &str, offset: u64, ctx: &mut Context<Self>) {
        if !self.need_data(&text) {
            return;
        }
        let open =
            move |s: &Services, user, path| s.open_read.send(OpenRead { user, path, offset });
        self.on_path(
            ctx,
            text,
            arg,
            open,
            move |act, source: Box<dyn ByteSource>, path| {
                let size = source.size();
                if offset > size {
                    // RFC 3659 §5.4: a marker past the end is an invalid REST parameter.
                    return Next::Reply(act.store_error(&StoreError::BadOffset));
                }
                let mode = if act.settings.ascii {
                    "ASCII"
                } else {
                    "BINARY"
                };
                Next::Transfer {
                    opening: format!(
                        "Opening {mode} mode data connection for {path} ({} bytes).",
                        size
                    ),
                    job: Job::SendFile {
                        source,
                        ascii: act.settings.ascii,
                    },
                    kind: TransferKind::Download(path),
                }
            },
        );
    }

    /// STOR, APPE, STOU and REST+STOR: `mode` says how the file is written.
    pub(super) fn stor(
        &mut self,
        text: String,
        arg: &str,
        mode: WriteMode,
        ctx: &mut Context<Self>,
    ) {
        let capabilities = self.env.capabilities;
        let unsupported = match mode {
            WriteMode::Append if !capabilities.append => Some(Unsupported::Append),
            WriteMode::At(_) if !capabilities.write_at => Some(Unsupported::WriteAt),
            _ => None,
        };
        if let Some(what) = unsupported {
            self.finish(&text, replies::unsupported(what));
            return;
        }
        if !self.need_data(&text) {
            return;
        }
        if arg.ends_with('/') {
            // A trailing slash names a directory; no file may be created under that name.
            self.finish(
                &text,
                Reply::new(ReplyCode::NameNotAllowed, "Not a file name."),
            );
            return;
        }
        let open =
            move |s: &Services, user, path| s.open_write.send(OpenWrite { user, path, mode });
        self.on_path(
            ctx,
            text,
            arg,
            open,
            move |act, sink: Box<dyn ByteSink>, _| {
                let target = sink.target().clone();
                // RFC 1123 §4.1.2.9: STOU's 150 reply names the file as "FILE: name".
                let opening = if mode == WriteMode::Unique {
                    format!("FILE: {}", target.file_name().unwrap_or_default())
                } else {
                    format!("Ok to send data for {target}.")
                };
                Next::Transfer {
                    opening,
                    job: Job::Receive {
                        sink,
                        ascii: act.settings.ascii,
                    },
                    kind: TransferKind::Upload(target),
                }
            },
        );
    }

    /// PORT and EPRT (RFC 959 §4.1.2, RFC 2428 §2): active mode, only back to the client's own
    /// address and to an unprivileged port, so the server cannot be used to attack a third host
    /// ("FTP bounce", RFC 2577).
    pub(super) fn port(&mut self, text: &str, target: std::net::SocketAddr) {
        if self.settings.epsv_all {
            self.finish(text, replies::only_epsv());
            return;
        }
        if !self.peer.allows_active_target(target) {
            session_log!(warn, self, "refused active-mode target {target}");
            self.finish(
                text,
                Reply::new(
                    ReplyCode::SyntaxError,
                    "Illegal PORT: only your own address and ports from 1024.",
                ),
            );
            return;
        }
        self.settings.data = Some(DataPlan::Active {
            target,
            local: self.peer.local().ip(),
        });
        let verb = if target.is_ipv6() { "EPRT" } else { "PORT" };
        self.finish(
            text,
            Reply::new(ReplyCode::Ok, format!("{verb} command successful.")),
        );
    }

    /// Where this session's data connections belong.
    pub(super) fn channel(&self) -> transfer::Channel {
        transfer::Channel {
            peer: self.peer,
            config: self.env.config.get(),
            stall: self.env.config.get().data_timeout(),
            session: self.id,
            audit: {
                let audit = self.env.services.audit.clone();
                Arc::new(move |event| audit.do_send(Record(event)))
            },
        }
    }

    /// TLS on a data connection with `tls`, resumption required as configured.
    pub(super) fn protection(&self, tls: &tokio_rustls::TlsAcceptor) -> transfer::Protection {
        transfer::Protection {
            tls: tls.clone(),
            require_resumption: self.env.config.get().require_tls_resumption,
        }
    }

    /// Replies 150 and spawns the transfer task; its end is handled by `transfer_done`.
    pub(super) fn start_transfer(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        job: Job,
        kind: TransferKind,
        opening: &str,
    ) {
        if self.env.config.get().require_tls_data && !self.prot_private {
            self.settings.data = None;
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::DataProtectionRequired,
                    "Data connections must be encrypted: use PROT P.",
                ),
            );
            return;
        }
        let direction = match kind {
            TransferKind::Upload(_) => Direction::Upload,
            TransferKind::Download(_) => Direction::Download,
            TransferKind::Listing => Direction::Listing,
        };
        let permit = self.state.logged_in().and_then(|l| {
            self.env
                .limits
                .transfer(&l.name, direction)
                .unwrap_or_else(|e| {
                    state::unavailable("transfer", &e);
                    None
                })
        });
        let Some(permit) = permit else {
            self.settings.data = None;
            self.finish(&text, replies::limit(Limit::Transfers));
            return;
        };
        let Some(plan) = self.settings.data.take() else {
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::CantOpenData,
                    "Use PASV, EPSV, PORT or EPRT first.",
                ),
            );
            return;
        };
        self.send(Reply::new(ReplyCode::OpeningData, opening));
        let progress = Arc::new(AtomicU64::new(0));
        let acceptor = match job {
            Job::Receive { .. } => &self.env.upload_tls,
            _ => &self.env.tls,
        };
        let protection = acceptor
            .as_ref()
            .filter(|_| self.prot_private)
            .map(|tls| self.protection(tls));
        let start = transfer::Start {
            job,
            protection,
            progress: progress.clone(),
            permit,
        };
        let (outcome_tx, outcome) = tokio::sync::oneshot::channel();
        let run = transfer::begin(&self.env.transfers, plan, self.channel(), start);
        let abort = run.abort_handle();
        let task = self.env.transfers.spawn_waiter(async move {
            // Moved in before the transfer's handle, so dropped after it: the channel closes
            // only once an aborted transfer task is gone.
            let outcome_tx = outcome_tx;
            // If the session has ended, the outcome comes back and is dropped here, so that
            // keeping or removing its upload never blocks a session arbiter.
            if let Ok(outcome) = run.await {
                let _ = outcome_tx.send(outcome);
            }
        });
        ctx.spawn(task.into_actor(self).map(|joined, act: &mut Session, ctx| {
            // The task has ended: its outcome, if it sent one, is in the channel.
            let outcome = joined.map_err(|e| e.to_string()).and_then(|()| {
                act.transfer
                    .as_mut()
                    .and_then(|running| running.outcome.as_mut())
                    .and_then(|outcome| outcome.try_recv().ok())
                    .ok_or_else(|| "the transfer task sent no outcome".to_owned())
            });
            act.transfer_done(outcome, ctx);
        }));
        let (what, path) = match &kind {
            TransferKind::Listing => ("listing", None),
            TransferKind::Download(path) => ("download", Some(path.to_string())),
            TransferKind::Upload(path) => ("upload", Some(path.to_string())),
        };
        self.live
            .transfer_started(what, path, Arc::clone(&progress));
        self.transfer = Some(Box::new(Running {
            task: abort,
            aborting: None,
            cmd: text,
            kind,
            ascii: self.settings.ascii,
            started: Instant::now(),
            progress,
            outcome: Some(outcome),
        }));
    }

    pub(super) fn abor(&mut self, text: &str) {
        let Some(running) = self.transfer.as_mut() else {
            self.settings.data = None;
            self.finish(
                text,
                Reply::new(ReplyCode::DataOpenNoTransfer, "No transfer to abort."),
            );
            return;
        };
        // The task is dropped at its next await on the transfer pool, which closes its data
        // socket and removes a staged upload; the replies follow once it has ended, so a
        // client may reuse the file at once.
        running.aborting = Some(text.to_owned());
        running.task.abort();
    }
}
