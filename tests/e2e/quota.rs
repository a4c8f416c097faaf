//! End-to-end quotas and registration controls over real TCP: the exact 552 behaviour (no
//! partial file, no temporary left, usage unchanged), file-count limits, concurrent uploads
//! sharing one budget, `SITE QUOTA`, `ferryd user quota` (set, show, recount), usage across a
//! restart, invitation-only registration and the per-address hourly registration cap.

use crate::common;

use std::io::Write;
use std::net::Shutdown;

use common::{Control, Reply, TestServer, has_event, pseudo_random};
use serde_json::json;

/// Files left in the staging directory.
fn temps(server: &TestServer) -> usize {
    std::fs::read_dir(server.data_dir().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `SITE QUOTA` as (bytes used, files used) plus the reply text.
fn site_quota(ctl: &mut Control) -> (u64, u64, String) {
    let reply = ctl.expect("SITE QUOTA", 211);
    let text = reply.text();
    let number = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
    };
    (number("Bytes used: "), number("Files used: "), text)
}

/// An upload that tolerates the server closing the data connection early (it does on 552).
pub(crate) fn upload(ctl: &mut Control, verb: &str, path: &str, bytes: &[u8]) -> Reply {
    let mut data = ctl.data_connection();
    let first = ctl.cmd(&format!("{verb} {path}"));
    if first.code != 150 && first.code != 125 {
        return first;
    }
    for chunk in bytes.chunks(64 * 1024) {
        if data.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = data.shutdown(Shutdown::Write);
    drop(data);
    ctl.reply()
}

fn admin_ok(server: &TestServer, args: &[&str]) -> String {
    let out = server.admin(args, None);
    assert!(
        out.status.success(),
        "ferryd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn byte_limit_552_leaves_nothing_behind() {
    let server = TestServer::start(&["--default-quota-bytes", "1000"]);
    let mut ctl = server.register_and_login("alice", "password1");
    let (bytes, files, text) = site_quota(&mut ctl);
    assert_eq!((bytes, files), (0, 0));
    assert!(
        text.contains("Bytes used: 0 of 1000") && text.contains("Files used: 0 of 10000"),
        "{text}"
    );

    assert_eq!(upload(&mut ctl, "STOR", "a", &[b'a'; 600]).code, 226);
    // One byte too many: 552, no file, no temporary, usage unchanged.
    let refused = upload(&mut ctl, "STOR", "b", &pseudo_random(401, 1));
    assert_eq!(refused.code, 552, "{refused:?}");
    assert!(!server.home("alice").join("b").exists());
    assert_eq!(temps(&server), 0);
    assert_eq!(site_quota(&mut ctl).0, 600);
    // A large one is cut off as soon as it passes the limit.
    let big = upload(&mut ctl, "STOR", "big", &pseudo_random(3 << 20, 2));
    assert_eq!(big.code, 552, "{big:?}");
    assert!(!server.home("alice").join("big").exists());
    assert_eq!(temps(&server), 0);
    // APPE and REST+STOR in place may not grow the file past the limit either.
    let appended = upload(&mut ctl, "APPE", "a", &[b'x'; 500]);
    assert_eq!(appended.code, 552, "{appended:?}");
    assert_eq!(
        std::fs::read(server.home("alice").join("a")).expect("a"),
        vec![b'a'; 600]
    );
    let new_appe = upload(&mut ctl, "APPE", "c", &[b'c'; 500]);
    assert_eq!(new_appe.code, 552, "{new_appe:?}");
    assert!(!server.home("alice").join("c").exists());
    ctl.expect("REST 100", 350);
    let resumed = upload(&mut ctl, "STOR", "a", &[b'r'; 901]);
    assert_eq!(resumed.code, 552, "{resumed:?}");
    assert_eq!(
        std::fs::metadata(server.home("alice").join("a"))
            .expect("a")
            .len(),
        100
    );
    assert_eq!(site_quota(&mut ctl), (100, 1, site_quota(&mut ctl).2));

    // Exactly up to the limit passes; replacing a file reuses its old size.
    assert_eq!(upload(&mut ctl, "STOR", "b", &[b'b'; 900]).code, 226);
    assert_eq!(site_quota(&mut ctl).0, 1000);
    assert_eq!(upload(&mut ctl, "STOR", "b", &[b'B'; 900]).code, 226);
    assert_eq!(upload(&mut ctl, "STOR", "d", b"!").code, 552);
    ctl.expect("DELE b", 250);
    assert_eq!(site_quota(&mut ctl).0, 100);
    assert_eq!(upload(&mut ctl, "STOR", "d", &[b'd'; 900]).code, 226);

    server.wait_audit("a 552 upload", |events| {
        has_event(
            events,
            &[
                ("event", json!("upload")),
                ("path", json!("/big")),
                ("code", json!(552)),
            ],
        )
    });
}

#[test]
fn file_limit_counts_files_and_directories() {
    let server = TestServer::start(&["--default-quota-files", "2"]);
    let mut ctl = server.register_and_login("bob", "password1");
    ctl.expect("MKD d", 257);
    assert_eq!(upload(&mut ctl, "STOR", "d/f", b"one").code, 226);
    assert_eq!(upload(&mut ctl, "STOR", "g", b"two").code, 552);
    ctl.expect("MKD e", 552);
    assert_eq!(upload(&mut ctl, "STOU", "", b"three").code, 552);
    assert_eq!(upload(&mut ctl, "APPE", "h", b"four").code, 552);
    // Replacing an existing file needs no new slot.
    assert_eq!(upload(&mut ctl, "STOR", "d/f", b"one again").code, 226);
    let (bytes, files, text) = site_quota(&mut ctl);
    // A directory costs 4096 bytes.
    assert_eq!((bytes, files), (4096 + 9, 2), "{text}");
    assert!(text.contains("of 2"), "{text}");
    ctl.expect("DELE d/f", 250);
    assert_eq!(upload(&mut ctl, "STOR", "g", b"two").code, 226);
    assert_eq!(temps(&server), 0);
    // A rename over an existing file frees its slot.
    ctl.expect("RMD d", 250);
    assert_eq!(upload(&mut ctl, "STOR", "h", b"h").code, 226);
    ctl.expect("RNFR h", 350);
    ctl.expect("RNTO g", 250);
    assert_eq!(site_quota(&mut ctl).1, 1);
}

#[test]
fn concurrent_uploads_cannot_pass_the_limit_together() {
    const LIMIT: u64 = 1_000_000;
    let server = TestServer::start(&["--default-quota-bytes", &LIMIT.to_string()]);
    drop(server.register_and_login("carol", "password1"));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let addr = server.addr();
            std::thread::spawn(move || {
                let mut ctl = Control::connect(addr);
                assert_eq!(ctl.reply().code, 220);
                ctl.login("carol", "password1");
                upload(
                    &mut ctl,
                    "STOR",
                    &format!("f{i}"),
                    &pseudo_random(600_000, i),
                )
                .code
            })
        })
        .collect();
    let codes: Vec<u16> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    assert!(codes.iter().all(|c| matches!(c, 226 | 552)), "{codes:?}");
    assert!(
        codes.iter().filter(|c| **c == 226).count() <= 1,
        "{codes:?}"
    );
    let stored: u64 = std::fs::read_dir(server.home("carol"))
        .expect("home")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert!(stored <= LIMIT, "{stored} bytes stored");
    assert_eq!(temps(&server), 0);
    let mut ctl = Control::connect(server.addr());
    ctl.reply();
    ctl.login("carol", "password1");
    assert_eq!(site_quota(&mut ctl).0, stored);
}

#[test]
fn operator_sets_shows_and_recounts_quota_and_usage_survives_restart() {
    let mut server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("dave", "password1");
    let (_, _, text) = site_quota(&mut ctl);
    assert!(text.contains("Bytes used: 0 of none"), "{text}");
    assert_eq!(upload(&mut ctl, "STOR", "f", &[1; 300]).code, 226);

    let set = admin_ok(&server, &["user", "quota", "dave", "--bytes", "400"]);
    assert!(set.contains("Bytes used: 300 of 400"), "{set}");
    // The new limit holds at once, in the running server.
    assert_eq!(upload(&mut ctl, "STOR", "g", &[2; 200]).code, 552);
    let shown = admin_ok(&server, &["user", "quota", "dave"]);
    assert!(shown.contains("Files used: 1 of 10000"), "{shown}");

    // Files added behind the server's back count after a recount.
    std::fs::write(server.home("dave").join("behind"), [3; 50]).expect("write");
    assert_eq!(site_quota(&mut ctl).0, 300);
    let counted = admin_ok(&server, &["user", "quota", "dave", "--recount"]);
    assert!(counted.contains("Bytes used: 350 of 400"), "{counted}");
    assert_eq!(site_quota(&mut ctl), (350, 2, site_quota(&mut ctl).2));
    admin_ok(&server, &["user", "quota", "dave", "--bytes", "none"]);
    drop(ctl);

    server.restart();
    let (mut ctl, _) = server.connect();
    ctl.login("dave", "password1");
    let (bytes, files, text) = site_quota(&mut ctl);
    assert_eq!((bytes, files), (350, 2), "{text}");
    assert!(text.contains("of none"), "{text}");
    assert!(server.data_dir().join("usage/dave.json").is_file());
}

#[test]
fn invitation_only_registration() {
    let server = TestServer::start(&["--registration", "invite"]);
    let code = admin_ok(&server, &["invite", "create", "--uses", "1"])
        .trim()
        .to_owned();
    assert_eq!(code.len(), 16, "{code:?}");
    let (mut ctl, _) = server.connect();
    ctl.expect("SITE REGISTER erin password1", 501);
    ctl.expect("SITE REGISTER erin password1 wrongcode", 550);
    ctl.expect(&format!("SITE REGISTER erin pass word1 {code}"), 200);
    ctl.expect(&format!("SITE REGISTER fred password1 {code}"), 550);
    ctl.login("erin", "pass word1");
    let listed = admin_ok(&server, &["invite", "list"]);
    assert!(listed.contains(&code), "{listed}");
    server.wait_audit("refused registrations", |events| {
        has_event(
            events,
            &[("event", json!("register_refused")), ("code", json!(550))],
        ) && has_event(
            events,
            &[("event", json!("register")), ("user", json!("erin"))],
        )
    });
}

#[test]
fn registrations_per_address_are_capped() {
    let server = TestServer::start(&["--max-registrations-per-ip-per-hour", "2"]);
    let (mut ctl, _) = server.connect();
    ctl.expect("SITE REGISTER u1 password1", 200);
    ctl.expect("SITE REGISTER u1 password1", 550);
    ctl.expect("SITE REGISTER u2 password1", 200);
    let refused = ctl.expect("SITE REGISTER u3 password1", 550);
    assert!(
        refused.text().contains("Too many registrations"),
        "{refused:?}"
    );
    let (mut other, _) = server.connect();
    other.expect("SITE REGISTER u4 password1", 550);
    server.wait_audit("a capped registration", |events| {
        has_event(
            events,
            &[
                ("event", json!("register_refused")),
                ("user", json!("u3")),
                ("code", json!(550)),
            ],
        )
    });
}
