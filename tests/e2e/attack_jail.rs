//! Attack on the home jail under a race (issue 10, item 3): while a local process exchanges a
//! directory in alice's home with a symbolic link that leads out of it (to a directory outside
//! the data dir, and to bob's home) in a tight loop, alice's sessions read, hash, list, upload,
//! delete, create, rename, chmod and set times through the swapped name. Nothing outside her home
//! may be read or changed, whatever the timing.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Control, TestServer};
use rustix::fs::{CWD, RenameFlags, renameat_with};
use sha2::{Digest, Sha256};

/// How long the sessions attack (the swapper runs as long).
const ATTACK: Duration = Duration::from_secs(5);
/// Bound on the operations of one session, whatever the speed of the machine.
const MAX_ROUNDS: usize = 2_000;
/// Files per directory that DELE and RNFR/RNTO consume, one per round at most.
const VICTIMS: usize = 400;

const OUTSIDE_SECRET: &[u8] = b"OUTSIDE-SECRET: must never reach a client";
const BOB_SECRET: &[u8] = b"BOB-SECRET: bob's private file";
const ALICE_OWN: &[u8] = b"alice's own file";

/// Everything about a tree that an escape could change: per path, kind, size, mode, mtime and
/// a digest of the contents.
fn snapshot(root: &Path) -> BTreeMap<String, (bool, u64, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read snapshot dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let digest = if meta.is_file() {
                Sha256::digest(fs::read(&path).expect("read")).to_vec()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            out.insert(
                rel,
                (meta.is_dir(), meta.len(), meta.mode(), meta.mtime(), digest),
            );
        }
    }
    out
}

/// A directory with the names the attack uses, each file holding `content`.
fn populate(dir: &Path, content: &[u8], marker: &str) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join("secret.txt"), content).expect("secret");
    fs::write(dir.join("over.txt"), content).expect("over");
    fs::write(dir.join("mode.txt"), content).expect("mode");
    fs::set_permissions(
        dir.join("mode.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    fs::write(dir.join(marker), content).expect("marker");
    for i in 0..VICTIMS {
        fs::write(dir.join(format!("v{i}")), content).expect("victim");
        fs::write(dir.join(format!("r{i}")), content).expect("rename victim");
    }
}

/// Counts the replies and data that show an escape.
#[derive(Default)]
struct Escapes {
    secret_bytes: AtomicU64,
    outside_names_listed: AtomicU64,
    secret_hashes: AtomicU64,
    operations: AtomicU64,
    /// RETRs that got alice's own file: the attack path works when not swapped.
    own_reads: AtomicU64,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One session's attack through `dir` (a name the swapper exchanges with a link out).
fn attack(ctl: &mut Control, dir: &str, stop: &AtomicBool, seen: &Escapes, worker: usize) {
    let secrets = [
        hex::encode(Sha256::digest(OUTSIDE_SECRET)),
        hex::encode(Sha256::digest(BOB_SECRET)),
    ];
    let deadline = Instant::now() + ATTACK;
    for round in 0..MAX_ROUNDS {
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        seen.operations.fetch_add(1, Ordering::Relaxed);
        match (worker + round) % 9 {
            0 => {
                let (_, bytes) = ctl.fetch(&format!("RETR {dir}/secret.txt"));
                if contains(&bytes, b"SECRET") {
                    seen.secret_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                } else if bytes == ALICE_OWN {
                    seen.own_reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            1 => {
                let reply = ctl.cmd(&format!("HASH {dir}/secret.txt"));
                let text = reply.text();
                if secrets.iter().any(|s| text.contains(s.as_str())) {
                    seen.secret_hashes.fetch_add(1, Ordering::Relaxed);
                }
            }
            2 => {
                let verb = ["LIST", "NLST", "MLSD"][round % 3];
                let (_, bytes) = ctl.fetch(&format!("{verb} {dir}"));
                if contains(&bytes, b"only-outside") || contains(&bytes, b"only-bob") {
                    seen.outside_names_listed.fetch_add(1, Ordering::Relaxed);
                }
            }
            3 => {
                ctl.stor(&format!("{dir}/up-{worker}-{round}"), ALICE_OWN);
                ctl.stor(&format!("{dir}/over.txt"), ALICE_OWN);
            }
            4 => {
                ctl.cmd(&format!("DELE {dir}/v{}", round % VICTIMS));
            }
            5 => {
                ctl.cmd(&format!("MKD {dir}/m-{worker}-{round}"));
                ctl.cmd(&format!("RMD {dir}/m-{worker}-{}", round.saturating_sub(9)));
            }
            6 => {
                let i = round % VICTIMS;
                if ctl.cmd(&format!("RNFR {dir}/r{i}")).code == 350 {
                    ctl.cmd(&format!("RNTO {dir}/moved-{worker}-{i}"));
                }
            }
            7 => {
                ctl.cmd(&format!("SITE CHMOD 777 {dir}/mode.txt"));
            }
            _ => {
                ctl.cmd(&format!("MFMT 20000101000000 {dir}/mode.txt"));
            }
        }
    }
}

#[test]
fn swapping_a_directory_for_a_link_out_never_escapes_the_home() {
    let server = TestServer::start(&[]);
    drop(server.register_and_login("alice", "alice-password"));
    drop(server.register_and_login("bob", "bob-password"));
    let outside = tempfile::Builder::new()
        .prefix("ferry-outside-")
        .tempdir()
        .expect("outside dir");
    let alice = server.home("alice");
    let bob = server.home("bob");
    populate(outside.path(), OUTSIDE_SECRET, "only-outside");
    populate(&bob, BOB_SECRET, "only-bob");
    populate(&alice.join("d"), ALICE_OWN, "alice-d");
    populate(&alice.join("e"), ALICE_OWN, "alice-e");
    symlink(outside.path(), alice.join("out")).expect("link out");
    symlink(&bob, alice.join("bob")).expect("link to bob");
    let outside_before = snapshot(outside.path());
    let bob_before = snapshot(&bob);

    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let seen = Escapes::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + ATTACK + Duration::from_secs(1);
            let pairs = [("d", "out"), ("e", "bob")];
            // Bounded in time and count; an even number of exchanges per pair leaves the tree
            // as it was.
            for n in 0..20_000_000u64 {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                for (a, b) in pairs {
                    for _ in 0..2 {
                        renameat_with(
                            CWD,
                            alice.join(a),
                            CWD,
                            alice.join(b),
                            RenameFlags::EXCHANGE,
                        )
                        .expect("exchange");
                    }
                }
                swaps.store(n + 1, Ordering::Relaxed);
            }
        });
        let workers: Vec<_> = (0..6)
            .map(|worker| {
                let (server, stop, seen) = (&server, &stop, &seen);
                s.spawn(move || {
                    let (mut ctl, _) = server.connect();
                    ctl.login("alice", "alice-password");
                    let dir = if worker % 2 == 0 { "d" } else { "e" };
                    attack(&mut ctl, dir, stop, seen, worker);
                    ctl.expect("NOOP", 200);
                })
            })
            .collect();
        for worker in workers {
            if let Err(panic) = worker.join() {
                stop.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(panic);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });

    let outside_after = snapshot(outside.path());
    let bob_after = snapshot(&bob);
    let changed = |before: &BTreeMap<_, _>, after: &BTreeMap<_, _>| {
        let mut names: Vec<&String> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        names.extend(after.keys().filter(|k| !before.contains_key(*k)));
        names.into_iter().cloned().collect::<Vec<String>>()
    };
    let outside_changed = changed(&outside_before, &outside_after);
    let bob_changed = changed(&bob_before, &bob_after);
    let figures = format!(
        "{} operations ({} reads of alice's own file), {} exchanges: secret bytes received {}, secret digests {}, \
         listings showing outside names {}, outside entries changed {} {:?}, \
         bob's entries changed {} {:?}",
        seen.operations.load(Ordering::Relaxed),
        seen.own_reads.load(Ordering::Relaxed),
        swaps.load(Ordering::Relaxed),
        seen.secret_bytes.load(Ordering::Relaxed),
        seen.secret_hashes.load(Ordering::Relaxed),
        seen.outside_names_listed.load(Ordering::Relaxed),
        outside_changed.len(),
        outside_changed.iter().take(5).collect::<Vec<_>>(),
        bob_changed.len(),
        bob_changed.iter().take(5).collect::<Vec<_>>(),
    );
    eprintln!("{figures}");
    assert!(
        swaps.load(Ordering::Relaxed) > 100,
        "the swapper hardly ran: {figures}"
    );
    assert!(
        seen.own_reads.load(Ordering::Relaxed) > 0,
        "the attacked path never worked: {figures}"
    );
    assert_eq!(seen.secret_bytes.load(Ordering::Relaxed), 0, "{figures}");
    assert_eq!(seen.secret_hashes.load(Ordering::Relaxed), 0, "{figures}");
    assert_eq!(
        seen.outside_names_listed.load(Ordering::Relaxed),
        0,
        "{figures}"
    );
    assert!(outside_changed.is_empty(), "{figures}");
    assert!(bob_changed.is_empty(), "{figures}");
}
