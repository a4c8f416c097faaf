//! LIST and NLST as the classic clients use them: wildcards in the last path component
//! (`mget`, `mdelete`, `mls` of tnftp and inetutils `ftp`), names joined to the argument
//! (`for n in nlst("dir"): RETR n`), `ls -la`-style options and single files. Each test starts
//! its own `ferryd`; the real clients run with their commands on standard input.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{
    Control, TestServer, assert_success, pseudo_random, run_client, run_client_with_input,
};

/// The files every test uploads: name -> contents (distinct per file, so a mix-up shows).
fn tree() -> BTreeMap<&'static str, Vec<u8>> {
    [
        "a.dat",
        "b.dat",
        "c.txt",
        ".hidden.dat",
        "lit[1].dat",
        "old1.tmp",
        "old2.tmp",
        "dir/f1.dat",
        "dir/f2.dat",
        "dir/g.dat",
        "dir/x.txt",
    ]
    .into_iter()
    .enumerate()
    .map(|(i, name)| (name, pseudo_random(100 + i * 37, i as u64 + 1)))
    .collect()
}

/// Registers `user`, creates `dir/sub` and uploads [`tree`]; returns the logged-in session.
fn upload_tree(server: &TestServer, user: &str, pass: &str) -> Control {
    let mut ctl = server.register_and_login(user, pass);
    ctl.expect("MKD dir", 257);
    ctl.expect("MKD dir/sub", 257);
    for (name, bytes) in tree() {
        assert_eq!(ctl.stor(name, &bytes).code, 226, "STOR {name}");
    }
    ctl
}

/// The lines of a listing, sorted.
fn lines(listing: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(listing)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// NLST `arg`, which must succeed: its names, sorted.
fn nlst(ctl: &mut Control, arg: &str) -> Vec<String> {
    let (reply, listing) = ctl.fetch(&format!("NLST {arg}"));
    assert_eq!(reply.code, 226, "NLST {arg}: {reply:?}");
    lines(&listing)
}

/// LIST `arg`, which must succeed: the name at the end of each line, sorted.
fn list_names(ctl: &mut Control, arg: &str) -> Vec<String> {
    let (reply, listing) = ctl.fetch(&format!("LIST {arg}"));
    assert_eq!(reply.code, 226, "LIST {arg}: {reply:?}");
    let mut names: Vec<String> = lines(&listing)
        .iter()
        .map(|line| {
            // `-rw-r--r--   1 ftp ftp   123 Dec  2 12:45 name`: the name is the 9th field on.
            line.split_whitespace()
                .skip(8)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    names.sort();
    names
}

#[test]
fn nlst_and_list_expand_wildcards_in_the_last_component() {
    let server = TestServer::start(&[]);
    let mut ctl = upload_tree(&server, "gwen", "gwen-password-1");

    assert_eq!(nlst(&mut ctl, "*.dat"), ["a.dat", "b.dat", "lit[1].dat"]);
    assert_eq!(
        nlst(&mut ctl, "dir/*.dat"),
        ["dir/f1.dat", "dir/f2.dat", "dir/g.dat"]
    );
    assert_eq!(
        nlst(&mut ctl, "dir/*"),
        [
            "dir/f1.dat",
            "dir/f2.dat",
            "dir/g.dat",
            "dir/sub",
            "dir/x.txt"
        ]
    );
    assert_eq!(nlst(&mut ctl, "/dir/f*"), ["/dir/f1.dat", "/dir/f2.dat"]);
    assert_eq!(list_names(&mut ctl, "dir/f*.dat"), ["f1.dat", "f2.dat"]);
    assert_eq!(list_names(&mut ctl, "-l dir/f*.dat"), ["f1.dat", "f2.dat"]);
    // Classes, ranges, negation and `?`.
    assert_eq!(nlst(&mut ctl, "[a-b].dat"), ["a.dat", "b.dat"]);
    assert_eq!(nlst(&mut ctl, "[!a].dat"), ["b.dat"]);
    assert_eq!(nlst(&mut ctl, "[ac].*"), ["a.dat", "c.txt"]);
    assert_eq!(nlst(&mut ctl, "?.txt"), ["c.txt"]);
    assert_eq!(nlst(&mut ctl, "dir/f?.dat"), ["dir/f1.dat", "dir/f2.dat"]);
    assert_eq!(nlst(&mut ctl, "old[0-9].tmp"), ["old1.tmp", "old2.tmp"]);
    // Hidden names only for a pattern that starts with a dot.
    assert_eq!(nlst(&mut ctl, ".*.dat"), [".hidden.dat"]);
    // A name that exists is itself, whatever characters it holds.
    assert_eq!(nlst(&mut ctl, "lit[1].dat"), ["lit[1].dat"]);
    assert_eq!(list_names(&mut ctl, "lit[1].dat"), ["lit[1].dat"]);
    // A pattern that matches nothing is an empty listing (vsftpd does the same).
    assert!(nlst(&mut ctl, "*.none").is_empty());
    assert!(list_names(&mut ctl, "dir/*.none").is_empty());
    // A missing directory is still missing; MLSD takes no patterns (RFC 3659 §7.1).
    assert_eq!(ctl.fetch("NLST nodir/*").0.code, 550);
    assert_eq!(ctl.fetch("MLSD di*").0.code, 550);
    // Wildcards before the last component are ordinary characters.
    assert_eq!(ctl.fetch("NLST d*/f1.dat").0.code, 550);
    ctl.expect("QUIT", 221);
}

#[test]
fn nlst_names_join_the_argument_and_options_and_files_list_as_ls_does() {
    let server = TestServer::start(&[]);
    let mut ctl = upload_tree(&server, "hugo", "hugo-password-1");

    let dir = [
        "dir/f1.dat",
        "dir/f2.dat",
        "dir/g.dat",
        "dir/sub",
        "dir/x.txt",
    ];
    assert_eq!(nlst(&mut ctl, "dir"), dir);
    assert_eq!(nlst(&mut ctl, "dir/"), dir);
    assert_eq!(nlst(&mut ctl, "-a dir"), dir);
    assert_eq!(nlst(&mut ctl, "dir/sub"), Vec::<String>::new());
    assert_eq!(nlst(&mut ctl, "dir/f1.dat"), ["dir/f1.dat"]);
    assert_eq!(nlst(&mut ctl, "a.dat"), ["a.dat"]);
    // No argument (also after options): bare names, as before.
    let (reply, bare) = ctl.fetch("NLST");
    assert_eq!(reply.code, 226);
    assert_eq!(
        lines(&bare),
        [
            ".hidden.dat",
            "a.dat",
            "b.dat",
            "c.txt",
            "dir",
            "lit[1].dat",
            "old1.tmp",
            "old2.tmp"
        ]
    );
    let (reply, flagged) = ctl.fetch("NLST -a");
    assert_eq!(reply.code, 226);
    assert_eq!(lines(&flagged), lines(&bare));

    // `ls -la` and `dir FILE`: options ignored, a file is one line.
    let (reply, plain) = ctl.fetch("LIST");
    assert_eq!(reply.code, 226);
    let (reply, la) = ctl.fetch("LIST -la");
    assert_eq!(reply.code, 226);
    assert_eq!(lines(&plain), lines(&la));
    assert_eq!(
        list_names(&mut ctl, "-l dir"),
        ["f1.dat", "f2.dat", "g.dat", "sub", "x.txt"]
    );
    let (reply, one) = ctl.fetch("LIST -la dir/g.dat");
    assert_eq!(reply.code, 226);
    let one = lines(&one);
    let size = tree()["dir/g.dat"].len();
    assert!(
        one.len() == 1 && one[0].starts_with("-rw") && one[0].ends_with(" g.dat"),
        "{one:?}"
    );
    assert!(one[0].contains(&format!(" {size} ")), "{one:?}");
    ctl.expect("QUIT", 221);
}

#[test]
fn wildcards_never_leave_the_home() {
    let server = TestServer::start(&[]);
    let mut bob = server.register_and_login("bob", "bob-password-12");
    assert_eq!(bob.stor("secret.dat", b"bob's secret").code, 226);
    bob.expect("QUIT", 221);
    let mut ctl = upload_tree(&server, "ida", "ida-password-12");
    // Links an operator (or a race) left: one to a file outside, one to a directory outside.
    let home = server.home("ida");
    std::os::unix::fs::symlink(server.home("bob").join("secret.dat"), home.join("leak.dat"))
        .expect("link");
    std::os::unix::fs::symlink(server.home("bob"), home.join("bobdir")).expect("link");

    let top = nlst(&mut ctl, "*.dat");
    assert_eq!(top, ["a.dat", "b.dat", "lit[1].dat"]);
    for arg in [
        "../*",
        "../../*",
        "/../../*",
        "../bob/*",
        "../../home/bob/*",
        "dir/../../*.dat",
        "*/../*.dat",
    ] {
        let (reply, listing) = ctl.fetch(&format!("NLST {arg}"));
        let text = String::from_utf8_lossy(&listing);
        assert!(
            !text.contains("secret") && !text.contains("bob's"),
            "NLST {arg} showed {text:?}"
        );
        if reply.code == 226 {
            // `..` stops at the home: whatever matched is in it, and named so RETR finds it.
            for name in lines(&listing) {
                let base = name.rsplit('/').next().unwrap_or(&name).to_owned();
                assert!(
                    home.join(&base).exists(),
                    "NLST {arg} gave {name}, not in the home"
                );
            }
        } else {
            assert_eq!(reply.code, 550, "NLST {arg}: {reply:?}");
        }
    }
    assert_eq!(ctl.fetch("NLST bobdir/*").0.code, 550);
    assert_eq!(ctl.fetch("LIST bobdir/*.dat").0.code, 550);
    let (reply, listing) = ctl.fetch("LIST ../*/*.dat");
    assert!(
        reply.code == 550 && listing.is_empty(),
        "{reply:?} {listing:?}"
    );
    ctl.expect("QUIT", 221);
}

const FTPLIB_SCRIPT: &str = r#"
import ftplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ftp = ftplib.FTP()
ftp.connect('127.0.0.1', port, timeout=15)
ftp.login(user, password)
for pattern in ['dir', 'dir/*.dat', '*.dat']:
    for name in ftp.nlst(pattern):
        if name.endswith('/sub'):
            continue
        chunks = []
        ftp.retrbinary('RETR ' + name, chunks.append)
        print(pattern, name, len(b''.join(chunks)), sum(b''.join(chunks)))
assert ftp.nlst('*.none') == [], ftp.nlst('*.none')
ftp.quit()
print('OK')
"#;

#[test]
fn ftplib_retrieves_every_name_nlst_gives() {
    let server = TestServer::start(&[]);
    let (user, pass) = ("jack", "jack-password-1");
    upload_tree(&server, user, pass).expect("QUIT", 221);
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(work.path().join("client.py"), FTPLIB_SCRIPT).expect("write script");
    let out = run_client(
        "python3",
        &["client.py", &server.port().to_string(), user, pass],
        work.path(),
    );
    assert_success(&out, "ftplib script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Vec<&str> = stdout.lines().collect();
    let line = |pattern: &str, name: &str, bytes: &[u8]| {
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        format!("{pattern} {name} {} {sum}", bytes.len())
    };
    let files = tree();
    let mut want = Vec::new();
    for name in ["dir/f1.dat", "dir/f2.dat", "dir/g.dat", "dir/x.txt"] {
        want.push(line("dir", name, &files[name]));
    }
    for name in ["dir/f1.dat", "dir/f2.dat", "dir/g.dat"] {
        want.push(line("dir/*.dat", name, &files[name]));
    }
    for name in ["a.dat", "b.dat", "lit[1].dat"] {
        want.push(line("*.dat", name, &files[name]));
    }
    want.push("OK".to_owned());
    assert_eq!(
        got,
        want,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The regular files directly in `dir`, with their contents.
fn local_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read local dir")
        .map(|entry| entry.expect("entry"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| {
            let name = entry.file_name().into_string().expect("utf-8 name");
            (name, std::fs::read(entry.path()).expect("read local file"))
        })
        .collect()
}

/// Runs a classic `ftp` client (`-n`: no auto-login, `-i`: no prompts) with `commands` on its
/// standard input, after opening the server and logging in, in a fresh directory; returns the
/// files it left there. `marker` must be a remote directory: its `cd` runs last, and its
/// reply in the output shows the session was still in step at the end.
fn classic_client(
    program: &str,
    extra: &[&str],
    server: &TestServer,
    (user, pass): (&str, &str),
    commands: &str,
) -> BTreeMap<String, Vec<u8>> {
    let work = tempfile::tempdir().expect("temp dir");
    let script = format!(
        "open 127.0.0.1 {}\nuser {user} {pass}\nbinary\n{commands}\ncd dir/sub\npwd\nbye\n",
        server.port()
    );
    let args: Vec<&str> = ["-n", "-i"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let out = run_client_with_input(program, &args, work.path(), Some(&script));
    assert_success(&out, program);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/dir/sub"),
        "{program} lost the session before its last command:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    local_files(work.path())
}

/// `mget *.dat` fetches exactly the matching files (a pattern that matches nothing is no
/// error and no download), byte for byte; `mdelete` removes exactly its matches.
fn mget_and_mdelete(program: &str, extra: &[&str], user: &str) {
    let server = TestServer::start(&[]);
    let pass = "classic-pass-1";
    upload_tree(&server, user, pass).expect("QUIT", 221);
    let files = tree();
    let got = classic_client(
        program,
        extra,
        &server,
        (user, pass),
        "mget *.none *.dat\nmdelete old?.tmp",
    );
    let want: BTreeMap<String, Vec<u8>> = ["a.dat", "b.dat", "lit[1].dat"]
        .into_iter()
        .map(|name| (name.to_owned(), files[name].clone()))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got == want, "{program}: downloaded contents differ");
    let home = server.home(user);
    assert!(!home.join("old1.tmp").exists() && !home.join("old2.tmp").exists());
    for kept in ["a.dat", "c.txt", "dir/f1.dat"] {
        assert!(home.join(kept).exists(), "{program} removed {kept}");
    }
}

#[test]
fn tnftp_mget_and_mdelete_follow_the_pattern() {
    mget_and_mdelete("tnftp", &[], "kate");
}

#[test]
fn inetutils_ftp_mget_and_mdelete_follow_the_pattern() {
    mget_and_mdelete("inetutils-ftp", &["-p"], "liam");
}
