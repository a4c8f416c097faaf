//! Attacks on the path limits (issue 10, item 10): trees deeper or longer than the server can
//! walk, names past `NAME_MAX`, SITE CHMOD of the home itself, and a full disk.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use common::{TestServer, require_program};

/// The deepest entry below `root`, in names (links not followed).
fn depth(root: &Path) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, d)) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("entry");
            deepest = deepest.max(d + 1);
            if entry.file_type().expect("type").is_dir() {
                stack.push((entry.path(), d + 1));
            }
        }
    }
    deepest
}

#[test]
fn trees_past_the_depth_limit_are_never_built() {
    let mut config = tempfile::NamedTempFile::new().expect("config file");
    writeln!(config, "max_path_depth = 4").expect("write config");
    let config_path = config.path().to_str().expect("utf-8 path").to_owned();
    let server = TestServer::start(&["--config", &config_path]);
    let mut ctl = server.register_and_login("dora", "dora-password");
    for dir in ["a", "a/b", "a/b/c", "a/b/c/d"] {
        ctl.expect(&format!("MKD {dir}"), 257);
    }
    ctl.expect("MKD a/b/c/d/e", 553);
    assert_eq!(ctl.stor("a/b/c/d/f", b"too deep").code, 553);
    assert_eq!(ctl.cmd("APPE a/b/c/d/f").code, 553);
    ctl.expect(&format!("MKD {}", "n".repeat(256)), 553);
    // A tree of 2 below x, moved to 3 deep, would reach 5.
    for dir in ["x", "x/y", "x/y/z"] {
        ctl.expect(&format!("MKD {dir}"), 257);
    }
    ctl.expect("RNFR x", 350);
    ctl.expect("RNTO a/b/x", 553);
    ctl.expect("RNFR x", 350);
    ctl.expect("RNTO a/x", 250);
    assert_eq!(depth(&server.home("dora")), 4);
    ctl.expect("NOOP", 200);
}

#[test]
fn site_chmod_cannot_change_the_home() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("hugo", "hugo-password");
    let home = server.home("hugo");
    symlink(".", home.join("self")).expect("operator's link");
    for path in ["/", ".", "self", "self/self"] {
        ctl.expect(&format!("SITE CHMOD 000 {path}"), 550);
    }
    assert_eq!(
        fs::metadata(&home).expect("home").permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(ctl.stor("f", b"x").code, 226);
    ctl.expect("SITE CHMOD 600 f", 200);
    assert_eq!(
        fs::metadata(home.join("f"))
            .expect("f")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

/// Unmounts on drop, so a failing test leaves no mount behind (lazily: the server may still
/// hold files there).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_answers_452_and_keeps_nothing_half_written() {
    let mut server = TestServer::start(&[]);
    let data = server.data_dir().to_path_buf();
    // The data dir on a 4 MiB tmpfs, so the disk fills after a few uploads. Needs root (or
    // CAP_SYS_ADMIN), as the developers' machines and CI have.
    require_program("mount");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "cannot mount a tmpfs on {}: {status}",
        data.display()
    );
    let _mount = Mount(data.clone());
    server.restart();
    let mut ctl = server.register_and_login("fay", "fay-password");
    assert_eq!(ctl.stor("small", &[7u8; 1000]).code, 226);
    // The server may stop reading and close the data connection before every byte is sent.
    let mut upload = ctl.data_connection();
    ctl.expect("STOR big", 150);
    let _ = upload.write_all(&vec![9u8; 8 << 20]);
    let _ = upload.shutdown(std::net::Shutdown::Write);
    drop(upload);
    let reply = ctl.reply();
    assert_eq!(reply.code, 452, "{reply:?}");
    ctl.expect("SIZE small", 213);
    ctl.expect("SIZE big", 550);
    let staged = fs::read_dir(data.join("tmp")).expect("tmp").count();
    assert_eq!(staged, 0, "a failed upload left its staged file");
    ctl.expect("NOOP", 200);
}
