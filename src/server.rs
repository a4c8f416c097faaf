//! Starting and stopping a whole server inside a running actix `System`: the backends (built by
//! [`crate::wiring`]), the service actors, the listeners and the Acceptor. Used by
//! `ferryd serve` and by tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;

use crate::accounts::AccountWatch;
use crate::actors::Services;
use crate::actors::acceptor::{Acceptor, StopAccepting};
use crate::actors::account_registry::{self, AccountRegistry};
use crate::actors::audit_log::{AuditLog, Flush, Reopen};
use crate::actors::file_store::{FileStore, LongJobs};
use crate::actors::session::SessionEnv;
use crate::admission::SessionRegistry;
use crate::config::{Config, ConfigError, LiveConfig};
use crate::ops::http::{AdminListener, Readiness, Sources};
use crate::transfer::TransferPool;
use crate::wiring::{self, Backends, OpenError};

/// How often shutdown checks whether every session has ended.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A data directory could not be prepared, or the S3 bucket cannot be used.
    #[error(transparent)]
    Backends(#[from] OpenError),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Worker threads could not be started.
    #[error("cannot start {what} threads: {source}")]
    Threads {
        /// Which threads.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The admin listener's token cannot be read.
    #[error("{0}")]
    AdminToken(std::io::Error),
    /// The S3 settings are incomplete (for the admin listener's readiness check).
    #[error(transparent)]
    S3(#[from] crate::storage::s3::S3SetupError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Connections the kernel may queue for `accept` (capped by `net.core.somaxconn`). The
/// default of 128 overflowed in a burst of 500 connects on loopback: dropped SYNs cost those
/// clients a 1 s retransmit, and a connection completed by a SYN cookie whose ACK was lost
/// waited for a greeting that never came.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a control listener with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and tokio do for listeners: a restart may bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Descriptors one session may hold at once: its control connection, a passive listener or
/// data connection, and the file a transfer reads or writes.
const DESCRIPTORS_PER_SESSION: u64 = 3;
/// Descriptors kept free beyond those open at start: log files, account and ledger files,
/// TLS handshakes, the acceptor's spare.
const DESCRIPTOR_RESERVE: u64 = 32;

/// Raises the soft open-file limit to the hard one and returns `max_sessions`, capped to what
/// the limit leaves for sessions (logged when it bites), so sessions run out before
/// descriptors do and data connections still find one.
fn sessions_within_descriptors(max_sessions: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max_sessions;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, |dir| dir.count() as u64);
    let usable = limit.saturating_sub(open + DESCRIPTOR_RESERVE) / DESCRIPTORS_PER_SESSION;
    let allowed = usize::try_from(usable).unwrap_or(usize::MAX).max(1);
    if allowed < max_sessions {
        log::warn!(
            "max_sessions capped to {allowed} (configured {max_sessions}): the open-file limit is \
             {limit}, {open} are in use at start; raise it (ulimit -n, LimitNOFILE=) for more"
        );
        allowed
    } else {
        max_sessions
    }
}

/// A running server.
pub struct Server {
    acceptor: Addr<Acceptor>,
    registry: Arc<SessionRegistry>,
    audit: Addr<AuditLog>,
    arbiters: Vec<Arbiter>,
    /// The configuration in force; SIGHUP replaces what may change at once.
    config: LiveConfig,
    /// Told of reloaded account settings.
    accounts: Addr<AccountRegistry>,
    /// Told of reloaded limits.
    state: Arc<dyn crate::state::SharedState>,
    /// The watch for account changes made elsewhere, with a database; ends with the server.
    _accounts: Option<AccountWatch>,
    /// The admin HTTP listener, with `admin_listen`.
    admin: Option<AdminListener>,
    /// What `/ready` says; drained first at shutdown.
    readiness: Arc<Readiness>,
    /// The TLS certificate, reloaded on SIGHUP.
    certificate: Option<Arc<crate::tls::Certificate>>,
}

impl Server {
    /// Binds every configured address and starts all actors. Call inside a running `System`.
    /// Logs `listening on ADDR` (info) once per bound listener.
    ///
    /// # Errors
    /// [`StartError`] when the configuration, a directory or a bind fails.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let Backends {
            accounts,
            invites,
            storage,
            audit,
            state,
            remains,
            database,
            metrics,
        } = Backends::open(&config).await?;
        // Read before anything listens: a server that cannot guard its admin listener must
        // not start.
        let admin_token = wiring::admin_token(config.admin_token_file.as_deref())
            .map_err(StartError::AdminToken)?;
        let tls = wiring::tls(&config)?;
        let certificate = tls.as_ref().map(|tls| Arc::clone(&tls.certificate));
        let (tls, upload_tls) = match tls {
            Some(tls) => (Some(tls.control), Some(tls.upload)),
            None => (None, None),
        };
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        let wanted = config
            .listen
            .iter()
            .map(|a| (*a, false))
            .chain(config.implicit_tls_listen.iter().map(|a| (*a, true)));
        for (addr, implicit) in wanted {
            let listener = listen(addr).map_err(|source| StartError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            addrs.push((bound, implicit));
            listeners.push((listener, implicit));
        }

        let registry_actor = AccountRegistry::start(
            accounts,
            wiring::registry_settings(&config, invites, remains, Arc::clone(&state)),
            config.blocking_threads,
        )
        .await;
        let capabilities = storage.capabilities();
        let files = FileStore::start(Arc::clone(&storage));
        let mut services =
            Services::new(&registry_actor, &files, &audit).counted_in(metrics.backlog());
        let readiness = Readiness::new(Arc::clone(&storage), database.clone());
        let long_jobs = LongJobs::start(storage, config.long_jobs_per_user);
        services.list = long_jobs.clone().recipient();
        services.list_pages = long_jobs.clone().recipient();
        services.hash = long_jobs.recipient();
        let arbiters: Vec<Arbiter> = (0..config.workers).map(|_| Arbiter::new()).collect();
        let transfers =
            TransferPool::new(config.transfer_threads).map_err(|source| StartError::Threads {
                what: "transfer",
                source,
            })?;
        // Counted once every thread and file of the server is open, so the reserve covers them.
        let max_sessions = sessions_within_descriptors(config.max_sessions);
        let sessions = SessionRegistry::new(max_sessions, Arc::clone(&state));
        let watch = database.map(|db| {
            let sessions = Arc::clone(&sessions);
            let period = db.lease() / 3;
            AccountWatch::start(db, period, move |change| {
                if change.gone {
                    sessions.account_gone(&change.name);
                }
            })
        });
        let transfers = Arc::new(transfers);
        let admin = match config.admin_listen {
            Some(addr) => Some(
                AdminListener::start(
                    addr,
                    admin_token,
                    Sources {
                        node: config.node_name(),
                        metrics,
                        sessions: Arc::clone(&sessions),
                        transfers: Arc::clone(&transfers),
                        readiness: Arc::clone(&readiness),
                    },
                )
                .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let live = LiveConfig::new(config);
        let env = Arc::new(SessionEnv {
            services,
            config: live.clone(),
            tls,
            limits: Arc::clone(&state),
            upload_tls,
            transfers,
            capabilities,
        });
        let acceptor = Acceptor::start(
            listeners,
            env,
            Arc::clone(&sessions),
            arbiters.iter().map(Arbiter::handle).collect(),
        );
        for (addr, implicit) in &addrs {
            if *implicit {
                log::info!("listening on {addr} (implicit TLS)");
            } else {
                log::info!("listening on {addr}");
            }
        }
        if let Some(admin) = &admin {
            // Not "listening on": scripts and tests take the first such line for FTP.
            log::info!("admin HTTP on http://{}", admin.addr());
        }
        Ok(Server {
            acceptor,
            registry: sessions,
            audit,
            arbiters,
            config: live,
            accounts: registry_actor,
            state,
            _accounts: watch,
            admin,
            readiness,
            certificate,
        })
    }

    /// SIGHUP: reopens `audit.jsonl` and `xferlog` (logrotate has moved them), reloads the
    /// TLS certificate and key (a renewal; a broken new one leaves the old in use and says
    /// why), and puts the limits, timeouts, registration mode and quota defaults of `fresh`
    /// (the configuration file read again, the command line over it) in force; the settings
    /// that need a restart are named in one log line and left as they are. A file that no
    /// longer reads or validates changes no setting.
    pub async fn reload(&self, fresh: Result<Config, ConfigError>) {
        if self.audit.send(Reopen).await.is_err() {
            log::error!("SIGHUP: the audit log is not running");
        }
        let tls = match &self.certificate {
            Some(certificate) => match certificate.reload() {
                Ok(()) => "the TLS certificate reloaded",
                Err(e) => {
                    log::error!(
                        "SIGHUP: the new TLS certificate is not used, the old one stays: {e}"
                    );
                    "the TLS certificate kept"
                }
            },
            None => "no TLS certificate",
        };
        log::info!("SIGHUP: audit.jsonl and xferlog reopened, {tls}");
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(e) => {
                log::error!("SIGHUP: the configuration is not reloaded, every setting stays: {e}");
                return;
            }
        };
        let (now, reload) = match self.config.reload(&fresh) {
            Ok(done) => done,
            Err(e) => {
                log::error!("SIGHUP: the configuration is not reloaded, every setting stays: {e}");
                return;
            }
        };
        self.state.reconfigure(&now);
        // Not awaited: a flood of queued logins must not hold the signal loop (and SIGTERM).
        self.accounts
            .do_send(account_registry::Reconfigure(Arc::clone(&now)));
        if reload.taken.is_empty() {
            log::info!("SIGHUP: no reloadable setting changed");
        } else {
            log::info!("SIGHUP: now in force: {}", reload.taken.join(", "));
        }
        if !reload.waiting.is_empty() {
            log::warn!(
                "SIGHUP: changed in the configuration but in force only after a restart, so \
                 left as they are: {}",
                reload.waiting.join(", ")
            );
        }
    }

    /// Graceful stop: no new connections, idle sessions get 421, running transfers may finish
    /// within the grace period, then the audit log is flushed.
    pub async fn shutdown(self) {
        log::info!("shutting down");
        // First, so a balancer polling /ready stops sending sessions at once.
        self.readiness.drain();
        // The acceptor may already be gone; nothing then remains to stop.
        let _ = self.acceptor.send(StopAccepting).await;
        self.registry.shutdown_all();
        let deadline = tokio::time::Instant::now() + self.config.get().shutdown_grace();
        while self.registry.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let left = self.registry.active();
        if left > 0 {
            log::warn!("{left} sessions still open after the grace period; closing them");
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        if self.audit.send(Flush).await.is_err() {
            log::error!("audit log was not running at shutdown");
        }
        if let Some(admin) = &self.admin {
            admin.stop().await;
        }
        log::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_control_listener_queues_a_burst_far_beyond_128() {
        let listener = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = listener.local_addr().expect("addr");
        // Nothing accepts: every connect must still complete from the kernel's queue alone
        // (with the old backlog of 128, the 130th waited for a SYN retransmit).
        let mut held = Vec::new();
        for i in 0..600 {
            let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .unwrap_or_else(|e| panic!("connect {i} did not complete: {e}"));
            held.push(stream);
        }
        drop(listener);
    }
}
