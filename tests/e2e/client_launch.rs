//! How `ferry` is started: defaults from its configuration file (flags win over it), the
//! one-shot forms `ferry get URL [LOCAL | -]` and `ferry put LOCAL URL` against ferryd, and
//! the exit statuses (README, "Exit status") of one-shots and scripts.

use crate::client_script::{Client, PASS, USER, server_with_user, target};
use crate::common::read;
use crate::common::{self, TestServer, pseudo_random, run_bounded};

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Bound on one client run.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// `ftp://alice@127.0.0.1:PORT` followed by `path`.
fn url(server: &TestServer, path: &str) -> String {
    format!("ftp://{USER}@127.0.0.1:{}{path}", server.port())
}

/// The client's default configuration file (below its HOME).
fn default_config(client: &Client) -> PathBuf {
    let dir = client.home.path().join(".config/ferry");
    std::fs::create_dir_all(&dir).expect("config dir");
    dir.join("config.toml")
}

/// The commands alice's sessions sent, in order.
fn commands(server: &TestServer, sessions: usize) -> Vec<String> {
    server
        .wait_sessions_closed(USER, sessions)
        .iter()
        .filter(|e| e["event"] == "command" && e["user"] == USER)
        .filter_map(|e| e["command"].as_str().map(str::to_owned))
        .collect()
}

fn is_active(command: &str) -> bool {
    command.starts_with("PORT ") || command.starts_with("EPRT ")
}

#[test]
fn client_config_file_sets_defaults_and_flags_win() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    let data = pseudo_random(200_000, 61);
    client.write("f.bin", &data);
    std::fs::write(default_config(&client), "active = true\nquiet = true\n").expect("config");
    // active = true: the data connections are PORT/EPRT ones; quiet = true: no confirmations.
    client
        .script(&server, "login alice; put f.bin; get f.bin back.bin")
        .ok("active from the file")
        .lacks("Logged in");
    assert_eq!(read(&server.home(USER).join("f.bin")), data);
    assert_eq!(read(&client.local("back.bin")), data);
    let sent = commands(&server, 2);
    assert_eq!(
        sent.iter().filter(|c| is_active(c)).count(),
        2,
        "one PORT/EPRT per transfer: {sent:?}"
    );
    assert!(!sent.iter().any(|c| c == "EPSV" || c == "PASV"), "{sent:?}");
    // --passive wins over the file.
    client
        .run(
            &[
                "--passive",
                &target(&server),
                "-c",
                "login alice; get f.bin",
            ],
            None,
        )
        .ok("--passive");
    let sent = commands(&server, 3);
    assert_eq!(sent.iter().filter(|c| is_active(c)).count(), 2, "{sent:?}");
    assert!(sent.iter().any(|c| c == "EPSV"), "{sent:?}");

    // --config names another file, here one that says nothing: passive and not quiet.
    let empty = client.home.path().join("empty.toml");
    std::fs::write(&empty, "# nothing\n").expect("empty config");
    client
        .run(
            &[
                "--config",
                empty.to_str().expect("utf-8"),
                &target(&server),
                "-c",
                "login alice",
            ],
            None,
        )
        .ok("--config")
        .has("Logged in as alice.");

    // A bad key or value: status 2 and one line naming the file, the line and the key.
    let path = default_config(&client);
    std::fs::write(&path, "quiet = true\ncolour = \"blue\"\n").expect("config");
    let shown = path.display().to_string();
    client.run(&["-c", "help"], None).fails_with(
        2,
        "unknown key",
        &format!("{shown}, line 2: unknown field `colour`"),
        "expected one of `active`",
    );
    std::fs::write(&path, "parallel = 100\n").expect("config");
    client
        .run(&[&target(&server)], Some("login alice\n"))
        .fails_with(
            2,
            "bad value",
            &format!("{shown}, line 1: parallel: "),
            "must be 1 to 64, not 100",
        );
    // $FERRY_CONFIG goes before the default file, and must exist.
    let mut other = Client::with_password(PASS);
    other.set("FERRY_CONFIG", "/nonexistent/ferry.toml");
    other.run(&["-c", "help"], None).fails_with(
        2,
        "missing FERRY_CONFIG",
        "cannot read /nonexistent/ferry.toml: ",
        "no such file",
    );
}

#[test]
fn client_one_shot_get_and_put_are_byte_exact() {
    let server = server_with_user();
    std::fs::create_dir(server.home(USER).join("in")).expect("remote dir");
    let client = Client::with_password(PASS);
    let data = pseudo_random(1_500_003, 62);
    client.write("up.bin", &data);
    // Into the login directory, into a directory (trailing /), and under another name.
    for (to, lands) in [
        ("", "up.bin"),
        ("/in/", "in/up.bin"),
        ("/in/other.bin", "in/other.bin"),
    ] {
        client
            .run(&["put", "up.bin", &url(&server, to)], None)
            .ok(&format!("put to {to:?}"));
        assert_eq!(read(&server.home(USER).join(lands)), data, "{lands}");
    }
    // Here under the remote name, under another, into a local directory.
    client
        .run(&["-q", "get", &url(&server, "/in/other.bin")], None)
        .ok("get");
    assert_eq!(read(&client.local("other.bin")), data);
    client
        .run(&["get", &url(&server, "/in/up.bin"), "copy.bin"], None)
        .ok("get LOCAL");
    assert_eq!(read(&client.local("copy.bin")), data);
    std::fs::create_dir(client.local("down")).expect("local dir");
    client
        .run(&["get", &url(&server, "/up.bin"), "down"], None)
        .ok("get DIR");
    assert_eq!(read(&client.local("down/up.bin")), data);
    // `-`: the file alone on standard output.
    let child = client
        .command(&["get", &url(&server, "/in/up.bin"), "-"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ferry");
    let out = run_bounded(child, RUN_TIMEOUT);
    common::assert_success(&out, "get to stdout");
    assert!(
        out.stdout == data,
        "stdout: {} bytes, not the file",
        out.stdout.len()
    );
    // A URL without a user: ~/.netrc gives it (and the password).
    let netrc = Client::new();
    let path = netrc.home.path().join(".netrc");
    std::fs::write(
        &path,
        format!("machine 127.0.0.1 login {USER} password {PASS}\n"),
    )
    .expect("netrc");
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&path, private).expect("chmod");
    netrc
        .run(
            &["get", &format!("ftp://127.0.0.1:{}/up.bin", server.port())],
            None,
        )
        .ok("get with netrc");
    assert_eq!(read(&netrc.local("up.bin")), data);
    // Set-up's session, then eight one-shots.
    let events = server.wait_sessions_closed(USER, 9);
    let quits = events
        .iter()
        .filter(|e| e["event"] == "command" && e["command"] == "QUIT")
        .count();
    assert_eq!(quits, 8, "every one-shot ends with QUIT");
}

#[test]
fn client_exit_statuses_of_one_shots_and_scripts() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    client.write("up.bin", b"payload");
    let refused_port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let nobody = format!("ftp://{USER}@127.0.0.1:{refused_port}/f.bin");
    // 1: a command failed (here: no such remote file, and no local file is left).
    client
        .run(&["get", &url(&server, "/missing.bin")], None)
        .fails("missing", "cannot download /missing.bin: ", "550");
    assert!(!client.local("missing.bin").exists());
    client
        .run(&["put", "nothere.bin", &url(&server, "/")], None)
        .fails("no local file", "cannot open nothere.bin: ", "no such file");
    // 2: bad usage (clap's own errors too).
    for args in [
        &["get"][..],
        &["put", "up.bin"],
        &["get", "ftp://alice@127.0.0.1/"],
        &["host", "extra"],
    ] {
        client
            .run(args, None)
            .fails_with(2, &args.join(" "), "", "usage: ferry ");
    }
    let url_get = url(&server, "/up.bin");
    client
        .run(&["get", &url_get, "-c", "pwd"], None)
        .fails_with(2, "-c with get", "-c does not go with get or put", "");
    let out = client.run(&["--parallel", "0"], None);
    assert_eq!(out.code, Some(2), "clap: {}", out.stderr);
    // 3: could not connect.
    client.run(&["get", &nobody], None).fails_with(
        3,
        "one-shot refused",
        "cannot connect to ",
        "refused",
    );
    client
        .run(&[], Some(&format!("open 127.0.0.1 {refused_port}\npwd\n")))
        .fails_with(3, "stdin open refused", "open 127.0.0.1", "refused");
    // 4: login refused.
    Client::with_password("wrong-password")
        .run(&["put", "up.bin", &url(&server, "/")], None)
        .fails_with(4, "wrong password", "530", "");
    assert!(!server.home(USER).join("up.bin").exists());
    Client::with_password("wrong-password")
        .run(&[&url(&server, "/")], Some("pwd\n"))
        .fails_with(4, "script login", "530", "");
}
