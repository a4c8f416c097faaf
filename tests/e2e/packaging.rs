//! The packaging files under `contrib/`, held to the code so that they cannot drift:
//! `contrib/ferryd.toml` names every key `Config` accepts, each with its default; the committed
//! completions and man pages are what the binaries generate; and every metric the Grafana
//! dashboard queries is one a running ferryd's `/metrics` exports.

use crate::common;
use crate::ops::{admin_addr, http};

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FERRYD, TestServer, assert_success, pseudo_random, run_bounded};
use ferry::config::Config;
use serde_json::Value;

/// The client binary built by cargo for these tests.
const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// Bound on one run of a binary that only generates a file.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// What to do when a generated file differs from the committed one.
const REGENERATE: &str = "run scripts/gen-contrib (cargo make contrib) and commit what it writes";

/// A path under `contrib/`.
fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

// ---------------------------------------------------------------------------------------------
// contrib/ferryd.toml
// ---------------------------------------------------------------------------------------------

/// The key of a `# key = value` line: a key the sample leaves unset, with an example value.
fn commented_key(line: &str) -> Option<&str> {
    let (key, _) = line.strip_prefix("# ")?.split_once(" = ")?;
    key.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        .then_some(key)
}

/// The keys `Config` accepts, as serde lists them when it refuses an unknown one
/// ("unknown field `x`, expected one of `listen`, `data_dir`, ..."): the code's own list.
fn accepted_keys() -> BTreeSet<String> {
    let error = toml::from_str::<Config>("no_such_ferryd_key = 0\n")
        .expect_err("Config refuses unknown keys")
        .to_string();
    let (_, list) = error
        .split_once("expected one of")
        .unwrap_or_else(|| panic!("no key list in the error:\n{error}"));
    let line = list.lines().next().unwrap_or_default();
    // Between backticks: the odd pieces of a split on them.
    let keys: BTreeSet<String> = line
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(keys.len() > 50, "too few keys parsed from:\n{error}");
    keys
}

/// Where two configurations differ, as the lines of their `{:#?}` that differ.
fn config_diff(file: &Config, defaults: &Config) -> String {
    let (file, defaults) = (format!("{file:#?}"), format!("{defaults:#?}"));
    file.lines()
        .zip(defaults.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  sample: {}\n  default: {}\n", a.trim(), b.trim()))
        .collect()
}

#[test]
fn sample_config_holds_every_key_at_its_default() {
    let path = contrib("ferryd.toml");
    let loaded = Config::from_file(&path).expect("contrib/ferryd.toml loads");
    let defaults = Config::default();
    assert!(
        loaded == defaults,
        "contrib/ferryd.toml differs from Config::default():\n{}",
        config_diff(&loaded, &defaults)
    );
    loaded
        .validate()
        .expect("the sample is a valid configuration");

    let text = fs::read_to_string(&path).expect("read contrib/ferryd.toml");
    let table: toml::Table = text.parse().expect("contrib/ferryd.toml is TOML");
    let set: BTreeSet<String> = table.keys().cloned().collect();
    let commented: Vec<&str> = text.lines().filter_map(commented_key).collect();
    let unset: BTreeSet<String> = commented.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(unset.len(), commented.len(), "a key commented out twice");
    let both: Vec<&String> = set.intersection(&unset).collect();
    assert!(both.is_empty(), "set and also commented out: {both:?}");

    let accepted = accepted_keys();
    let named: BTreeSet<String> = set.union(&unset).cloned().collect();
    let missing: Vec<&String> = accepted.difference(&named).collect();
    let unknown: Vec<&String> = named.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "contrib/ferryd.toml must name every key Config accepts: missing {missing:?}, \
         unknown {unknown:?}"
    );

    // The examples of the commented-out keys are values Config takes.
    let uncommented: String = text
        .lines()
        .map(|line| match commented_key(line) {
            Some(_) => &line[2..],
            None => line,
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    if let Err(e) = toml::from_str::<Config>(&uncommented) {
        panic!("contrib/ferryd.toml with every `# key = ...` line uncommented: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// contrib/completions, contrib/man
// ---------------------------------------------------------------------------------------------

/// Runs `program args..` and returns its standard output, asserting it succeeded.
fn generate(program: &str, args: &[&str]) -> Vec<u8> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let out = run_bounded(child, RUN_TIMEOUT);
    assert_success(&out, &format!("{program} {}", args.join(" ")));
    out.stdout
}

#[test]
fn committed_completions_are_what_the_binaries_generate() {
    for (program, name) in [(FERRYD, "ferryd"), (FERRY, "ferry")] {
        for (shell, file) in [
            ("bash", format!("{name}.bash")),
            ("zsh", format!("_{name}")),
            ("fish", format!("{name}.fish")),
        ] {
            let generated = generate(program, &["--generate-completions", shell]);
            let path = format!("completions/{file}");
            let committed = fs::read(contrib(&path)).unwrap_or_default();
            assert!(
                generated == committed,
                "contrib/{path} differs from `{name} --generate-completions {shell}`: {REGENERATE}"
            );
            // A script that offers the hidden flags would make them public.
            let script = String::from_utf8_lossy(&generated);
            assert!(!script.contains("generate-"), "contrib/{path} offers them");
        }
    }
}

/// The files of `dir`, by name, with their contents.
fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, fs::read(&path).expect("read a man page"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn committed_man_pages_are_what_the_binaries_generate() {
    let out = tempfile::tempdir().expect("temp dir");
    let dir = out.path().to_str().expect("a UTF-8 temp path");
    generate(FERRYD, &["--generate-man", dir]);
    generate(FERRY, &["--generate-man", dir]);
    let generated = files_in(out.path());
    let committed = files_in(&contrib("man"));
    let names = |files: &[(String, Vec<u8>)]| -> Vec<String> {
        files.iter().map(|(name, _)| name.clone()).collect()
    };
    assert_eq!(
        names(&committed),
        names(&generated),
        "contrib/man has other pages than the binaries generate: {REGENERATE}"
    );
    for name in ["ferryd.1", "ferryd-user-add.1", "ferry.1"] {
        assert!(names(&generated).iter().any(|n| n == name), "no {name}");
    }
    for ((name, committed), (_, generated)) in committed.iter().zip(&generated) {
        assert!(
            committed == generated,
            "contrib/man/{name} differs from what the binaries generate: {REGENERATE}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// contrib/grafana/ferryd.json
// ---------------------------------------------------------------------------------------------

/// Every PromQL string of the dashboard: each `expr`, and the template variables' definitions.
fn queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(query)) => out.push(query.clone()),
                    _ => queries(value, out),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `ferryd_*` series names a query names.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("ferryd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The series names of an OpenMetrics text's samples (a family appears once it has one).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            line.chars()
                .take_while(|c| *c != '{' && *c != ' ')
                .collect()
        })
        .collect()
}

/// A self-signed certificate and key from `ferryd cert generate --out DIR`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.to_str().expect("a UTF-8 temp path");
    generate(FERRYD, &["cert", "generate", "--out", out]);
    (dir.join("cert.pem"), dir.join("key.pem"))
}

#[test]
fn dashboard_queries_only_metrics_ferryd_exports() {
    let text = fs::read_to_string(contrib("grafana/ferryd.json")).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    assert!(found.len() > 20, "too few queries: {found:?}");
    for query in &found {
        assert!(
            !metric_names(query).is_empty(),
            "no ferryd metric in {query}"
        );
    }

    // A server whose every metric family has a sample: a registration, logins that pass and
    // fail, commands, an upload and a download, a TLS handshake (a failed one).
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(certs.path());
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let server = TestServer::start(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let admin = admin_addr(&server);
    let mut ctl = server.register_and_login("gina", "gina-pass-1");
    ctl.expect("TYPE I", 200);
    let body = pseudo_random(50_000, 7);
    assert_eq!(ctl.stor("g.bin", &body).code, 226);
    assert_eq!(ctl.retr("g.bin"), body);
    let (mut bad, _) = server.connect();
    bad.expect("USER gina", 331);
    bad.expect("PASS wrong-password", 530);
    let (mut tls, _) = server.connect();
    tls.expect("AUTH TLS", 234);
    tls.send_raw(b"this is no TLS client hello\r\n");

    let start = Instant::now();
    let names = loop {
        let (status, metrics) = http(admin, "GET", "/metrics", None);
        assert_eq!(status, 200, "{metrics}");
        let names = exported(&metrics);
        let all_there = [
            "ferryd_tls_handshakes_total",
            "ferryd_transfer_size_bytes_sum",
        ]
        .iter()
        .all(|name| names.contains(*name));
        if all_there || start.elapsed() > Duration::from_secs(10) {
            break names;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let unknown: BTreeSet<String> = found
        .iter()
        .flat_map(|query| metric_names(query))
        .filter(|name| !names.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "contrib/grafana/ferryd.json queries metrics /metrics does not export: {unknown:?}\n\
         exported: {names:?}"
    );
}
