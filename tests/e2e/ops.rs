//! The admin HTTP listener (`--admin-listen`): metrics that move as sessions log in, transfer
//! and fail, the bearer token, and `/ready` turning 503 at once on SIGTERM while running
//! transfers drain. Requests are plain HTTP/1.1 over a TcpStream, as a scraper sends them.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{TestServer, pseudo_random};

const TOKEN: &str = "admin-token-7f3a";

/// The admin listener's address, from the server's `admin HTTP on` line.
pub(crate) fn admin_addr(server: &TestServer) -> SocketAddr {
    server.wait_stderr("admin HTTP on http://");
    let log = server.stderr();
    log.split("admin HTTP on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in:\n{log}"))
}

/// One request; the status and the body.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    http_to(addr, method, path, token, "localhost")
}

/// [`http`] with `host` in the `Host` header.
fn http_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    host: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series in a `/metrics` text, 0 when it is not there yet.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// `/metrics` once `check` holds for it (the audit log counts events as it receives them,
/// a moment after the reply); bounded.
fn metrics_when(addr: SocketAddr, check: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (status, text) = http(addr, "GET", "/metrics", None);
        assert_eq!(status, 200, "{text}");
        if check(&text) || start.elapsed() > Duration::from_secs(10) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_move_as_sessions_log_in_transfer_and_fail() {
    let server = TestServer::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    let (status, body) = http(admin, "GET", "/health", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http(admin, "GET", "/ready", None);
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // Without a token, only requests naming the listener itself get data: a web page that
    // rebinds its own name to 127.0.0.1 gets nothing.
    for path in ["/metrics", "/status", "/sessions"] {
        assert_eq!(
            http_to(admin, "GET", path, None, "rebound.example:9100").0,
            401,
            "{path}"
        );
        assert_eq!(
            http_to(admin, "GET", path, None, "[::1]:9100").0,
            200,
            "{path}"
        );
    }
    let before = metrics_when(admin, |_| true);
    assert_eq!(series(&before, "ferryd_logins_total{result=\"ok\"}"), 0.0);

    let mut ctl = server.register_and_login("mia", "mia-pass-1");
    let (mut bad, _) = server.connect();
    bad.expect("USER mia", 331);
    bad.expect("PASS wrong-password", 530);
    let body = pseudo_random(300_000, 21);
    ctl.expect("TYPE I", 200);
    assert_eq!(ctl.stor("m.bin", &body).code, 226);
    assert_eq!(ctl.retr("m.bin"), body);
    ctl.expect("DELE nothing-here", 550);

    let text = metrics_when(admin, |text| {
        series(text, "ferryd_transferred_bytes_total{direction=\"out\"}") > 0.0
            && series(text, "ferryd_commands_total{verb=\"DELE\",class=\"5xx\"}") > 0.0
    });
    let at = |name: &str| series(&text, name);
    // Every request the sessions made was answered, every record taken: no backlog left,
    // and each service actor has its series.
    for actor in ["account_registry", "file_store", "long_jobs", "audit_log"] {
        let series = format!("ferryd_actor_mailbox_backlog{{actor=\"{actor}\"}} 0");
        assert!(text.lines().any(|l| l == series), "{series} in {text}");
    }
    assert_eq!(at("ferryd_logins_total{result=\"ok\"}"), 1.0, "{text}");
    assert_eq!(at("ferryd_logins_total{result=\"failed\"}"), 1.0, "{text}");
    assert_eq!(
        at("ferryd_registrations_total{result=\"ok\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(at("ferryd_sessions_open"), 2.0, "{text}");
    assert!(at("ferryd_sessions_opened_total") >= 2.0, "{text}");
    assert_eq!(
        at("ferryd_transferred_bytes_total{direction=\"in\"}"),
        300_000.0
    );
    assert_eq!(
        at("ferryd_transferred_bytes_total{direction=\"out\"}"),
        300_000.0
    );
    assert_eq!(
        at("ferryd_transfers_total{direction=\"in\",result=\"complete\"}"),
        1.0
    );
    assert_eq!(
        at("ferryd_transfer_size_bytes_count{direction=\"out\"}"),
        1.0
    );
    assert_eq!(
        at("ferryd_commands_total{verb=\"STOR\",class=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        at("ferryd_commands_total{verb=\"DELE\",class=\"5xx\"}"),
        1.0
    );
    assert!(
        !text.contains("mia") && !text.contains("m.bin"),
        "no user or path in a label:\n{text}"
    );
}

#[test]
fn the_token_is_required_for_all_but_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let server = TestServer::start(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file.to_str().expect("utf-8"),
    ]);
    let admin = admin_addr(&server);
    assert_eq!(http(admin, "GET", "/health", None).0, 200);
    for path in ["/metrics", "/ready"] {
        assert_eq!(http(admin, "GET", path, None).0, 401, "{path} without");
        assert_eq!(
            http(admin, "GET", path, Some("admin-token-7f3b")).0,
            401,
            "{path} with another token"
        );
        assert_eq!(http(admin, "GET", path, Some(TOKEN)).0, 200, "{path}");
    }
    server.wait_stderr("refused (no token");
    let admin_arg = admin.to_string();
    let cwd = server.data_dir();
    let refused = common::run_client(common::FERRYD, &["who", "--admin", &admin_arg], cwd);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("token is missing or wrong"),
        "{refused:?}"
    );
    let token_arg = token_file.to_str().expect("utf-8");
    let who = common::run_client(
        common::FERRYD,
        &[
            "who",
            "--admin",
            &admin_arg,
            "--admin-token-file",
            token_arg,
        ],
        cwd,
    );
    common::assert_success(&who, "ferryd who with the token");
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::admin(
        dir.path(),
        &[
            "serve",
            "--admin-listen",
            "0.0.0.0:0",
            "--listen",
            "127.0.0.1:0",
        ],
        None,
        &[],
    );
    assert!(!out.status.success(), "started without a token");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_token_file"), "{err}");
}

#[test]
fn ready_turns_503_at_once_on_sigterm_while_transfers_drain() {
    let mut server = TestServer::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    let mut ctl = server.register_and_login("ned", "ned-pass-1");
    ctl.expect("TYPE I", 200);
    let big = pseudo_random(32 << 20, 22);
    assert_eq!(ctl.stor("big.bin", &big).code, 226);
    // A download the client does not read: it runs until the grace period is over.
    let data = ctl.data_connection();
    ctl.expect("RETR big.bin", 150);
    assert_eq!(http(admin, "GET", "/ready", None).0, 200);

    server.send_sigterm();
    let start = Instant::now();
    let drained = loop {
        let (status, body) = http(admin, "GET", "/ready", None);
        if status == 503 || start.elapsed() > Duration::from_secs(5) {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(drained.0, 503, "{drained:?}");
    assert!(drained.1.contains("draining"), "{drained:?}");
    assert_eq!(http(admin, "GET", "/health", None).0, 200, "still up");
    drop(data);
    let status = server.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn sessions_show_a_running_transfer_and_a_kick_ends_it_audited() {
    let server = TestServer::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    let mut ctl = server.register_and_login("ola", "ola-pass-1");
    ctl.expect("TYPE I", 200);
    let big = pseudo_random(32 << 20, 23);
    assert_eq!(ctl.stor("big.bin", &big).code, 226);
    let (mut idle, _) = server.connect();
    idle.expect("USER someone", 331);
    // A download the client reads slowly: it is running when the kick comes.
    let mut data = ctl.data_connection();
    ctl.expect("RETR big.bin", 150);
    let mut first = vec![0u8; 1 << 20];
    data.read_exact(&mut first).expect("the first MiB");

    let (status, body) = http(admin, "GET", "/sessions", None);
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let all = listed.as_array().expect("an array");
    assert_eq!(all.len(), 2, "{body}");
    let ola = all
        .iter()
        .find(|s| s["user"] == "ola")
        .unwrap_or_else(|| panic!("ola in {body}"));
    assert_eq!(ola["command"], "RETR big.bin", "{body}");
    assert_eq!(ola["transfer"]["kind"], "download", "{body}");
    assert_eq!(ola["transfer"]["path"], "/big.bin", "{body}");
    assert!(
        ola["transfer"]["bytes"]
            .as_u64()
            .is_some_and(|b| b >= 1 << 20),
        "{body}"
    );
    assert!(
        ola["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    let other = all
        .iter()
        .find(|s| s["user"].is_null())
        .expect("the idle one");
    assert_eq!(other["command"], "USER someone", "{body}");
    assert!(!body.contains("ola-pass-1"), "{body}");
    let id = ola["id"].as_u64().expect("id");

    // `ferryd who` shows the same as a table, through the listener.
    let cwd = server.data_dir();
    let admin_arg = admin.to_string();
    let who = common::run_client(common::FERRYD, &["who", "--admin", &admin_arg], cwd);
    common::assert_success(&who, "ferryd who");
    let table = String::from_utf8_lossy(&who.stdout);
    let row = table
        .lines()
        .find(|line| line.contains(" ola "))
        .unwrap_or_else(|| panic!("ola in\n{table}"));
    assert!(
        row.contains("RETR big.bin") && row.contains("download /big.bin"),
        "{table}"
    );
    let missing = common::run_client(
        common::FERRYD,
        &["kick", "999999", "--admin", &admin_arg],
        cwd,
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no session 999999"),
        "{missing:?}"
    );
    assert_eq!(http(admin, "DELETE", "/sessions/999999", None).0, 404);
    let kicked = common::run_client(
        common::FERRYD,
        &["kick", &id.to_string(), "--admin", &admin_arg],
        cwd,
    );
    common::assert_success(&kicked, "ferryd kick");
    assert_eq!(ctl.reply().code, 426, "the transfer is aborted");
    assert_eq!(ctl.reply().code, 421, "then the session ends");
    ctl.assert_closed();
    drop(data);
    let events = server.wait_audit("the kick", |events| {
        events.iter().any(|e| {
            e["event"] == "session_close"
                && e["user"] == "ola"
                && e["command"].as_str().is_some_and(|c| {
                    c.starts_with("ended by the administrator (admin HTTP from 127.0.0.1:")
                })
        })
    });
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "download" && e["user"] == "ola" && e["complete"] == false),
        "the download is audited as incomplete"
    );
    idle.expect("NOOP", 200);
    let (_, after) = http(admin, "GET", "/sessions", None);
    assert!(!after.contains("\"ola\""), "{after}");
}

#[test]
fn sighup_during_1000_audited_commands_loses_no_line_and_tears_none() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("pia", "pia-pass-1");
    let log = server.data_dir().join("log");
    let rotated = log.join("audit.jsonl.rotated");
    for n in 0..1000 {
        if n == 400 {
            // What logrotate does: move the file away, then SIGHUP.
            std::fs::rename(log.join("audit.jsonl"), &rotated).expect("rotate");
            server.signal("HUP");
        }
        ctl.expect(&format!("SIZE missing-{n}"), 550);
    }
    server.wait_stderr("SIGHUP: audit.jsonl and xferlog reopened");
    let sizes = |text: &str| -> Vec<u32> {
        text.lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("a torn or broken line ({e}): {line:?}"))
            })
            .filter(|event| event["user"] == "pia")
            .filter_map(|event| {
                event["command"]
                    .as_str()?
                    .strip_prefix("SIZE missing-")?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let start = Instant::now();
    let (before, after) = loop {
        let before = sizes(&std::fs::read_to_string(&rotated).expect("rotated file"));
        let after = sizes(&std::fs::read_to_string(log.join("audit.jsonl")).unwrap_or_default());
        if before.len() + after.len() >= 1000 || start.elapsed() > Duration::from_secs(15) {
            break (before, after);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!after.is_empty(), "the new file gets the later events");
    let all: Vec<u32> = before.iter().chain(&after).copied().collect();
    assert_eq!(
        all,
        (0..1000).collect::<Vec<_>>(),
        "every command once, in order"
    );
}

#[test]
fn the_status_page_shows_a_running_transfer_and_ends_it_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    // The download stalls on purpose while the browser starts: a long data timeout keeps it
    // running on a slow machine.
    let server = TestServer::start(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file.to_str().expect("utf-8"),
        "--data-timeout-secs",
        "600",
    ]);
    let admin = admin_addr(&server);
    let mut ctl = server.register_and_login("uma", "uma-pass-1");
    ctl.expect("TYPE I", 200);
    // A client's file name is shown on the page: as text, never as markup.
    let hostile = "<img src=x onerror=\"document.title='pwned'\">.bin";
    let big = pseudo_random(32 << 20, 29);
    assert_eq!(ctl.stor(hostile, &big).code, 226);
    let mut data = ctl.data_connection();
    ctl.expect(&format!("RETR {hostile}"), 150);
    let mut first = vec![0u8; 1 << 20];
    data.read_exact(&mut first).expect("the first MiB");

    let browser = common::browser::Browser::launch();
    let mut page = browser.page();
    page.open(&format!("http://{admin}/"));
    // Without the token the page asks for it.
    page.wait_for("!document.getElementById('login').hidden", "the token form");
    page.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; \
         document.querySelector('#login button').click(); true"
    ));
    let shown = page.wait_for(
        "document.querySelector('#sessions tr[data-transfer=\"download\"]')?.innerText",
        "the running download",
    );
    let shown = shown.as_str().expect("text");
    assert!(shown.contains("uma"), "{shown}");
    assert!(shown.contains(&format!("download /{hostile}")), "{shown}");
    assert!(shown.contains("MiB at "), "{shown}");
    assert_eq!(page.eval("document.querySelectorAll('img').length"), 0);
    assert_ne!(page.eval("document.title"), "pwned");
    // The charts: the download moved megabytes since the first sample.
    page.wait_for(
        "/[KMG]iB\\/s/.test(document.querySelector('#throughput text')?.textContent)",
        "the throughput chart",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#throughput polyline').length"),
        2
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#load polyline').length"),
        2
    );
    page.wait_for(
        "document.getElementById('events').innerText.includes('login_ok')",
        "the login among the last events",
    );

    // End the session from the page.
    let id = page.eval(
        "const row = document.querySelector('#sessions tr[data-transfer=\"download\"]'); \
         row.querySelector('button[data-kick]').click(); row.dataset.session",
    );
    let id = id.as_str().expect("the session id").to_owned();
    assert_eq!(ctl.reply().code, 426, "the transfer is aborted");
    assert_eq!(ctl.reply().code, 421, "then the session ends");
    ctl.assert_closed();
    drop(data);
    page.wait_for(
        &format!("document.getElementById('notice').textContent === 'Session {id} ended.'"),
        "the page to say the session ended",
    );
    page.wait_for(
        "document.querySelector('#sessions tr[data-transfer]') === null",
        "the session to leave the table",
    );
    server.wait_audit("the kick from the page", |events| {
        events.iter().any(|e| {
            e["event"] == "session_close"
                && e["user"] == "uma"
                && e["command"].as_str().is_some_and(|c| {
                    c.starts_with("ended by the administrator (admin HTTP from 127.0.0.1:")
                })
        })
    });
    assert!(page.exceptions.is_empty(), "{:?}", page.exceptions);
}

#[test]
fn sighup_reloads_limits_timeouts_registration_and_quota_defaults_and_names_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ferryd.toml");
    std::fs::write(&file, "default_quota_files = 50\n").expect("config");
    let server = TestServer::start(&["--config", file.to_str().expect("utf-8")]);
    let mut ada = server.register_and_login("ada", "ada-pass-1");
    let files_limit = |ctl: &mut common::Control| {
        let text = ctl.expect("SITE QUOTA", 211).text();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Files used: "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no files line in {text}"))
    };
    assert!(
        files_limit(&mut ada).contains("of 50"),
        "the file's default"
    );

    // New defaults for accounts, a cap, a timeout, and one setting that needs a restart.
    std::fs::write(
        &file,
        "default_quota_files = 7\nmax_sessions_per_user = 1\nidle_timeout_secs = 2\n\
         max_listing_entries = 50\n",
    )
    .expect("config");
    server.signal("HUP");
    server.wait_stderr(
        "SIGHUP: now in force: default_quota_files, max_sessions_per_user, idle_timeout_secs",
    );
    server.wait_stderr("in force only after a restart, so left as they are: max_listing_entries");
    let mut bea = server.register_and_login("bea", "bea-pass-1");
    assert!(
        files_limit(&mut bea).contains("of 7"),
        "the reloaded default"
    );
    assert!(
        files_limit(&mut ada).contains("of 50"),
        "an account keeps its quota"
    );
    // ada is logged in once already: a second session is over the new cap.
    let (mut again, _) = server.connect();
    again.expect("USER ada", 331);
    let refused = again.cmd("PASS ada-pass-1");
    assert_eq!(refused.code, 421, "{refused:?}");
    // A new session times out after the new idle timeout (bounded wait).
    let (mut idle, _) = server.connect();
    let started = Instant::now();
    let closed = idle.reply();
    assert_eq!(closed.code, 421, "{closed:?}");
    assert!(closed.text().contains("Idle timeout"), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(8));

    // Registration closed by a reload; then a broken file changes nothing.
    std::fs::write(&file, "registration = \"closed\"\n").expect("config");
    server.signal("HUP");
    server.wait_stderr("SIGHUP: now in force: registration");
    let (mut stranger, _) = server.connect();
    let reply = stranger.cmd("SITE REGISTER cyd cyd-pass-12");
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(reply.text().contains("Registration is closed"), "{reply:?}");
    std::fs::write(&file, "registration = \"wide open\"\n").expect("config");
    server.signal("HUP");
    server.wait_stderr("SIGHUP: the configuration is not reloaded, every setting stays");
    let reply = stranger.cmd("SITE REGISTER cyd cyd-pass-12");
    assert_eq!(reply.code, 550, "still closed: {reply:?}");
    stranger.expect("NOOP", 200);
}

#[test]
fn ready_is_503_while_the_homes_directory_is_gone_and_200_when_it_is_back() {
    let server = TestServer::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    let homes = server.data_dir().join("home");
    let moved = server.data_dir().join("home.away");
    std::fs::rename(&homes, &moved).expect("move the homes away");
    let (status, body) = http(admin, "GET", "/ready", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("storage unreachable: "), "{body}");
    assert_eq!(
        http(admin, "GET", "/health", None).0,
        200,
        "the process is up"
    );
    std::fs::rename(&moved, &homes).expect("move them back");
    // The answer is reused for a few seconds; bounded wait for the next check.
    let start = Instant::now();
    loop {
        let (status, body) = http(admin, "GET", "/ready", None);
        if status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
