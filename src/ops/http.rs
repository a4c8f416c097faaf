//! The admin HTTP listener (`admin_listen`), on actix-web beside the FTP listeners:
//! `GET /health` (the process answers), `GET /ready` (listeners bound, storage and database
//! reachable, not draining; else 503 with the reason), `GET /metrics` (Prometheus text),
//! `GET /sessions` (the live sessions as JSON) and `DELETE /sessions/{id}` (ends one: 426 for
//! its transfer, 421, audited with who asked), and the status page: `GET /` and
//! `/status.js` (no data in them), `GET /status` (what the page shows, [`super::status`]).
//! Every data answer needs `Authorization: Bearer TOKEN` when a token is configured
//! (compared in constant time); the configuration refuses a listener off loopback without one.
//! Without a token, a request must name the listener by an address or `localhost` in its
//! `Host`, so a web page elsewhere cannot reach it through DNS rebinding.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use super::status::{self, History, Sample, Status};
use crate::admission::SessionRegistry;
use crate::audit::metrics::{Gauges, Metrics};
use crate::db::Database;
use crate::storage::Storage;
use crate::transfer::TransferPool;

/// How long a storage check's answer is reused: a balancer polling `/ready` every second
/// must not turn into a bucket listing every second.
const STORAGE_CHECK_TTL: Duration = Duration::from_secs(5);
/// The longest a storage check may take before `/ready` says the storage is unreachable.
const STORAGE_CHECK_LIMIT: Duration = Duration::from_secs(5);
/// How often a request looks for the answer of the check it waits for.
const STORAGE_CHECK_POLL: Duration = Duration::from_millis(20);

/// What `/ready` checks.
pub struct Readiness {
    draining: AtomicBool,
    database: Option<Arc<Database>>,
    storage: Arc<dyn Storage>,
    /// The last storage check: when it ended, and what it said.
    checked: Mutex<Option<(Instant, Result<(), String>)>>,
    /// A storage check is running.
    checking: AtomicBool,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("draining", &self.draining)
            .field("database", &self.database.is_some())
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Ready once built (the listeners are bound by then), while `storage` and `database`
    /// answer.
    pub fn new(storage: Arc<dyn Storage>, database: Option<Arc<Database>>) -> Arc<Readiness> {
        Arc::new(Readiness {
            draining: AtomicBool::new(false),
            database,
            storage,
            checked: Mutex::new(None),
            checking: AtomicBool::new(false),
        })
    }

    /// From now on `/ready` answers 503: the server is stopping and takes no new sessions.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The storage's answer: the last one while it is fresh, else a new check's. One check
    /// runs at a time, in a task of its own, and is waited for at most
    /// [`STORAGE_CHECK_LIMIT`]: a hung mount holds one blocking thread, not one per request.
    async fn storage_answer(self: &Arc<Self>) -> Result<(), String> {
        let asked = Instant::now();
        let last = |fresher_than: Instant| {
            self.checked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .filter(|(at, _)| *at >= fresher_than)
                .map(|(_, answer)| answer.clone())
        };
        if let Some(answer) = asked.checked_sub(STORAGE_CHECK_TTL).and_then(&last) {
            return answer;
        }
        if !self.checking.swap(true, Ordering::SeqCst) {
            let readiness = Arc::clone(self);
            actix_rt::spawn(async move {
                let answer = readiness.storage.answers().await;
                *readiness.checked.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), answer));
                readiness.checking.store(false, Ordering::SeqCst);
            });
        }
        while asked.elapsed() < STORAGE_CHECK_LIMIT {
            if let Some(answer) = last(asked) {
                return answer;
            }
            tokio::time::sleep(STORAGE_CHECK_POLL).await;
        }
        Err(format!(
            "no answer within {} s",
            STORAGE_CHECK_LIMIT.as_secs()
        ))
    }

    /// `Ok` when ready, else why not.
    async fn check(self: &Arc<Self>) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining: the server is stopping".into());
        }
        if let Some(db) = &self.database
            && !db.fresh()
        {
            return Err("the database has not answered this node's heartbeat".into());
        }
        let answer = self.storage_answer().await;
        answer.map_err(|why| format!("storage unreachable: {why}"))
    }
}

/// What the handlers share.
struct Admin {
    node: String,
    metrics: Arc<Metrics>,
    sessions: Arc<SessionRegistry>,
    transfers: Arc<TransferPool>,
    readiness: Arc<Readiness>,
    history: History,
    token: Option<String>,
}

impl Admin {
    /// Whether `request` carries the token; when none is configured, whether it names the
    /// listener by an address or `localhost`.
    fn allowed(&self, request: &HttpRequest) -> bool {
        let Some(token) = &self.token else {
            return names_this_host(request);
        };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        same(given.as_bytes(), token.as_bytes())
    }

    /// A sample of the sessions, transfers and bytes moved, taken now.
    fn sample(&self) -> Sample {
        let (sessions, moved) = self.sessions.sessions_and_moved();
        Sample::now(&sessions, self.transfers.running(), moved)
    }
}

/// Whether the request's `Host` is an IP address or `localhost` (with or without a port): a
/// browser sends the name it resolved, so a rebound name of someone else's never matches.
fn names_this_host(request: &HttpRequest) -> bool {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
    else {
        // HTTP/1.0 without Host: not a browser.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// `a == b` in a time that depends on their lengths only, not on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn unauthorized(request: &HttpRequest) -> HttpResponse {
    log::warn!(
        "admin: {} {} from {} refused (no token, or a Host that is not this listener's)",
        request.method(),
        request.path(),
        request
            .peer_addr()
            .map_or_else(|| "?".to_owned(), |a| a.to_string())
    );
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .body("a bearer token is required\n")
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

async fn ready(admin: web::Data<Admin>, request: HttpRequest) -> HttpResponse {
    if !admin.allowed(&request) {
        return unauthorized(&request);
    }
    match admin.readiness.check().await {
        Ok(()) => HttpResponse::Ok().body("ready\n"),
        Err(why) => HttpResponse::ServiceUnavailable().body(format!("{why}\n")),
    }
}

async fn scrape(admin: web::Data<Admin>, request: HttpRequest) -> HttpResponse {
    if !admin.allowed(&request) {
        return unauthorized(&request);
    }
    let text = admin.metrics.render(Gauges {
        sessions: admin.sessions.active(),
        transfers: admin.transfers.running(),
    });
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

/// The security headers of the page and its script: nothing but this listener's own
/// script runs in it, and no other site may frame it (the End buttons).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(status::PAGE)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(status::SCRIPT)
}

async fn status_now(admin: web::Data<Admin>, request: HttpRequest) -> HttpResponse {
    if !admin.allowed(&request) {
        return unauthorized(&request);
    }
    let (sessions, moved) = admin.sessions.sessions_and_moved();
    let now = Sample::now(&sessions, admin.transfers.running(), moved);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Status::new(
            &admin.node,
            sessions,
            admin.metrics.recent(),
            admin.history.list(),
            now,
        ))
}

async fn list_sessions(admin: web::Data<Admin>, request: HttpRequest) -> HttpResponse {
    if !admin.allowed(&request) {
        return unauthorized(&request);
    }
    let sessions: Vec<_> = admin
        .sessions
        .sessions()
        .into_iter()
        .map(|session| status::NodeSession {
            node: &admin.node,
            session,
        })
        .collect();
    HttpResponse::Ok().json(sessions)
}

async fn end_session(
    admin: web::Data<Admin>,
    request: HttpRequest,
    id: web::Path<u64>,
) -> HttpResponse {
    if !admin.allowed(&request) {
        return unauthorized(&request);
    }
    let id = id.into_inner();
    let by = format!(
        "the administrator (admin HTTP from {})",
        request
            .peer_addr()
            .map_or_else(|| "?".to_owned(), |a| a.to_string())
    );
    if admin.sessions.kick(id, by) {
        HttpResponse::Ok().json(serde_json::json!({ "ended": id }))
    } else {
        HttpResponse::NotFound().json(serde_json::json!({ "error": "no such session", "id": id }))
    }
}

/// The running admin listener.
pub struct AdminListener {
    handle: ServerHandle,
    addr: SocketAddr,
    sampler: tokio::task::JoinHandle<()>,
}

/// What the admin listener shows and acts on.
pub struct Sources {
    /// This node's name.
    pub node: String,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The live sessions.
    pub sessions: Arc<SessionRegistry>,
    /// The transfer pool (transfers running).
    pub transfers: Arc<TransferPool>,
    /// What `/ready` checks.
    pub readiness: Arc<Readiness>,
}

impl AdminListener {
    /// Binds `addr` and serves on one worker thread of its own.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(
        addr: SocketAddr,
        token: Option<String>,
        sources: Sources,
    ) -> std::io::Result<AdminListener> {
        let admin = web::Data::new(Admin {
            node: sources.node,
            metrics: sources.metrics,
            sessions: sources.sessions,
            transfers: sources.transfers,
            readiness: sources.readiness,
            history: History::default(),
            token,
        });
        let sampled = admin.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(admin.clone())
                .route("/", web::get().to(page))
                .route("/status.js", web::get().to(script))
                .route("/status", web::get().to(status_now))
                .route("/health", web::get().to(health))
                .route("/ready", web::get().to(ready))
                .route("/metrics", web::get().to(scrape))
                .route("/sessions", web::get().to(list_sessions))
                .route("/sessions/{id}", web::delete().to(end_session))
        })
        .workers(1)
        // The FTP server stops the listener itself, after its own drain.
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| std::io::Error::other("the admin listener bound no address"))?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(async move {
            if let Err(e) = server.await {
                log::error!("admin listener: {e}");
            }
        });
        let sampler = actix_rt::spawn(async move {
            let mut every = tokio::time::interval(status::SAMPLE_EVERY);
            // After a stall, one sample now, not a burst of them milliseconds apart.
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                sampled.history.push(sampled.sample());
            }
        });
        Ok(AdminListener {
            handle,
            addr,
            sampler,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it (requests in flight may finish within a second).
    pub async fn stop(&self) {
        self.sampler.abort();
        self.handle.stop(true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{names_this_host, same};
    use actix_web::test::TestRequest;

    #[test]
    fn without_a_token_only_addresses_and_localhost_name_the_listener() {
        let host = |value: &str| {
            names_this_host(
                &TestRequest::default()
                    .insert_header(("Host", value))
                    .to_http_request(),
            )
        };
        assert!(host("127.0.0.1:9100"));
        assert!(host("localhost:9100"));
        assert!(host("LOCALHOST"));
        assert!(host("[::1]:9100"));
        assert!(host("10.0.0.5"));
        assert!(!host("attacker.example:9100"));
        assert!(!host("localhost.attacker.example"));
        assert!(!host("127.0.0.1.nip.io:9100"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret-token", b"secret-token"));
        assert!(!same(b"secret-token", b"secret-tokem"));
        assert!(!same(b"secret-token", b"secret-toke"));
        assert!(!same(b"", b"x"));
    }
}
