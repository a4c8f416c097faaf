//! FEAT, HELP SITE and the refusals follow the storage backend's capabilities.

use super::*;

/// Everything off: a backend that can only read and replace whole files.
const NOTHING: Capabilities = Capabilities {
    append: false,
    write_at: false,
    rename_dirs: false,
    set_mtime: false,
    chmod: false,
    empty_dirs: false,
};

async fn connect_with(capabilities: Capabilities, tmp: &tempfile::TempDir) -> Client {
    let files = real_files(tmp);
    let mut c = connect_to(config(), capabilities, |audit| {
        Services::new(&StubAccounts::start(), &files, audit)
    })
    .await
    .greeted()
    .await;
    c.login().await;
    c
}

fn has_line(reply: &Reply, line: &str) -> bool {
    reply.lines.iter().any(|l| l.trim() == line)
}

#[actix::test]
async fn feat_and_help_site_leave_out_what_the_storage_cannot_do() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut all = connect_with(Capabilities::ALL, &tmp).await;
    let feat = all.expect("FEAT", 211).await;
    assert!(has_line(&feat, "MFMT"), "{feat:?}");
    let help = all.expect("HELP SITE", 214).await;
    assert!(
        help.lines.iter().any(|l| l.contains("SITE CHMOD")),
        "{help:?}"
    );

    let mut none = connect_with(NOTHING, &tmp).await;
    let feat = none.expect("FEAT", 211).await;
    assert!(!has_line(&feat, "MFMT"), "{feat:?}");
    assert!(
        has_line(&feat, "MDTM") && has_line(&feat, "SIZE"),
        "{feat:?}"
    );
    let help = none.expect("HELP SITE", 214).await;
    assert!(!help.lines.iter().any(|l| l.contains("CHMOD")), "{help:?}");
    assert!(
        help.lines.iter().any(|l| l.contains("SITE QUOTA")),
        "{help:?}"
    );
}

#[actix::test]
async fn commands_the_storage_cannot_do_are_refused_with_550() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_with(NOTHING, &tmp).await;
    let home = tmp.path().join("home/alice");
    std::fs::write(home.join("f.txt"), b"hello").expect("write file");
    c.expect("MKD d", 257).await;

    let refused = [
        "APPE f.txt",
        "MFMT 20200101000000 f.txt",
        "SITE CHMOD 600 f.txt",
        "RNFR d",
    ];
    for line in refused {
        let reply = c.expect(line, 550).await;
        assert!(
            reply.text().contains("does not support"),
            "{line}: {reply:?}"
        );
    }
    c.expect("REST 2", 350).await;
    let reply = c.expect("STOR f.txt", 550).await;
    assert!(reply.text().contains("does not support"), "{reply:?}");
    // Nothing changed, and a file can still be renamed.
    assert_eq!(std::fs::read(home.join("f.txt")).expect("read"), b"hello");
    assert!(home.join("d").is_dir());
    c.expect("RNFR f.txt", 350).await;
    c.expect("RNTO g.txt", 250).await;

    // The same commands are carried out when the storage can.
    let mut all = connect_with(Capabilities::ALL, &tmp).await;
    all.expect("MFMT 20200101000000 g.txt", 213).await;
    all.expect("SITE CHMOD 600 g.txt", 200).await;
    all.expect("RNFR d", 350).await;
    all.expect("RNTO e", 250).await;
}
