//! What only the memory backend has: capabilities that can be switched off. Everything it
//! shares with the local backend is in the conformance suite (`storage::conformance`).

use std::time::SystemTime;

use super::MemoryStorage;
use crate::storage::vpath::VPath;
use crate::storage::{Capabilities, ClientProbe, Storage, StoreError, WriteMode};

fn vp(path: &str) -> VPath {
    VPath::root().resolve(path).expect("valid test path")
}

/// Only reading and replacing whole files.
const NOTHING: Capabilities = Capabilities {
    append: false,
    write_at: false,
    rename_dirs: false,
    set_mtime: false,
    chmod: false,
    empty_dirs: false,
};

#[tokio::test]
async fn capabilities_switched_off_are_refused_and_the_rest_works() {
    let s = MemoryStorage::new().with_capabilities(NOTHING);
    assert_eq!(s.capabilities(), NOTHING);
    assert_eq!(MemoryStorage::new().capabilities(), Capabilities::ALL);
    s.create_home("alice").await.expect("home");
    let mut sink = s
        .open_write("alice", &vp("/f"), WriteMode::Replace)
        .await
        .expect("STOR needs nothing");
    sink.write(b"abc").await.expect("write");
    sink.commit(ClientProbe::new(|| false))
        .await
        .expect("commit");
    s.mkdir("alice", &vp("/d")).await.expect("mkdir");
    let denied = |r: Result<(), StoreError>, what: &str| {
        assert!(
            matches!(r, Err(StoreError::PermissionDenied)),
            "{what}: {r:?}"
        );
    };
    for mode in [WriteMode::Append, WriteMode::At(1)] {
        denied(
            s.open_write("alice", &vp("/f"), mode).await.map(drop),
            "in place",
        );
    }
    denied(
        s.rename("alice", &vp("/d"), &vp("/e")).await,
        "a directory's rename",
    );
    denied(
        s.set_modified("alice", &vp("/f"), SystemTime::UNIX_EPOCH)
            .await,
        "set_modified",
    );
    denied(s.chmod("alice", &vp("/f"), 0o600).await, "chmod");
    // What stays possible: files renamed, unique names, and the tree as it was.
    s.rename("alice", &vp("/f"), &vp("/g"))
        .await
        .expect("a file's rename");
    let unique = s
        .open_write("alice", &vp("/g"), WriteMode::Unique)
        .await
        .expect("STOU");
    assert_eq!(unique.target(), &vp("/g.1"));
    let info = s.stat("alice", &vp("/g")).await.expect("stat");
    assert_eq!((info.size, info.mode), (3, 0o644));
    assert!(s.list("alice", &vp("/d")).await.expect("list").is_dir);
}
