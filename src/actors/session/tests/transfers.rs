//! Data transfers with the real file store, on each storage backend.

use super::backends::{Backend, on_every_backend};
use super::*;

on_every_backend! {
    pasv_then_list,
    stor_then_retr_round_trip,
    appe_rest_and_stou,
    abor_during_a_slow_retr,
    rnfr_is_forgotten_after_another_command,
    idle_timeout_does_not_fire_during_a_transfer,
    commands_pipelined_during_a_transfer_are_answered_in_order,
    shutdown_during_a_transfer_closes_after_abor,
    quit_during_a_transfer_closes_after_abor,
    no_data_connection_is_425,
}

async fn pasv_then_list(b: Backend) {
    let mut c = b.connect(config()).await;
    c.login().await;
    b.put("/hello.txt", b"hi\n").await;
    let addr = c.pasv().await;
    c.expect("LIST", 150).await;
    let listing = read_all(data_connect(addr).await).await;
    assert_eq!(c.reply().await.code, 226);
    let listing = String::from_utf8(listing).expect("listing is UTF-8");
    assert!(listing.ends_with("\r\n"), "{listing:?}");
    assert_eq!(listing.lines().count(), 1, "{listing:?}");
    assert!(listing.contains("hello.txt"), "{listing:?}");
    c.expect("NOOP", 200).await;
}

/// The deadline itself is the file store's (tested there); here: its reply, and that the
/// session goes on.
#[actix::test]
async fn a_wildcard_expansion_past_its_deadline_is_451_and_the_session_goes_on() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(tmp.path().join("home"), tmp.path().join("tmp"))
        .expect("temp storage")
        .with_glob_time_limit(Duration::ZERO);
    let files = FileStore::start(Arc::new(storage));
    let mut c = connect(config(), |audit| {
        Services::new(&StubAccounts::start(), &files, audit)
    })
    .await
    .greeted()
    .await;
    c.login().await;
    std::fs::write(tmp.path().join("home/alice/a.dat"), b"a").expect("write file");
    let addr = c.pasv().await;
    let reply = c.expect("NLST *.dat", 451).await;
    assert!(reply.text().contains("took too long"), "{reply:?}");
    // A name without wildcards is no expansion: it is listed as before.
    c.expect("NLST a.dat", 150).await;
    assert_eq!(read_all(data_connect(addr).await).await, b"a.dat\r\n");
    assert_eq!(c.reply().await.code, 226);
    c.expect("NOOP", 200).await;
}

async fn stor_then_retr_round_trip(b: Backend) {
    let mut c = b.connect(config()).await;
    c.login().await;
    c.expect("TYPE I", 200).await;
    // Every byte value, CR and LF included, over several chunks.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();

    let addr = c.pasv().await;
    c.expect("STOR blob.bin", 150).await;
    let mut data = data_connect(addr).await;
    tokio::time::timeout(WAIT, async {
        data.write_all(&content).await?;
        data.shutdown().await
    })
    .await
    .expect("timed out uploading")
    .expect("upload");
    drop(data);
    assert_eq!(c.reply().await.code, 226);
    let stored = b.read("/blob.bin").await;
    assert!(stored == content, "stored file differs");
    let size = c.expect("SIZE blob.bin", 213).await;
    assert_eq!(size.text(), content.len().to_string());

    let addr = c.pasv().await;
    c.expect("RETR blob.bin", 150).await;
    let fetched = read_all(data_connect(addr).await).await;
    assert_eq!(c.reply().await.code, 226);
    assert!(fetched == content, "downloaded bytes differ");

    let events = c
        .events_until(|events| events.iter().any(|e| e.event == EventKind::Download))
        .await;
    let upload = events
        .iter()
        .find(|e| e.event == EventKind::Upload)
        .expect("upload recorded");
    assert_eq!(upload.bytes, Some(content.len() as u64));
    assert_eq!(upload.code, Some(226));
    let download = events
        .iter()
        .find(|e| e.event == EventKind::Download)
        .expect("download recorded");
    assert_eq!(download.bytes, Some(content.len() as u64));
    assert_eq!(download.path.as_deref(), Some("/blob.bin"));
}

/// Sends `bytes` over a fresh data connection for the transfer command `line`.
async fn upload(c: &mut Client, line: &str, bytes: &[u8]) -> Reply {
    let addr = c.pasv().await;
    let opening = c.expect(line, 150).await;
    let mut data = data_connect(addr).await;
    tokio::time::timeout(WAIT, async {
        data.write_all(bytes).await?;
        data.shutdown().await
    })
    .await
    .expect("timed out uploading")
    .expect("upload");
    drop(data);
    assert_eq!(c.reply().await.code, 226, "{line}");
    opening
}

async fn appe_rest_and_stou(b: Backend) {
    let mut c = b.connect(config()).await;
    c.login().await;
    c.expect("TYPE I", 200).await;
    b.put("/f", b"0123456789").await;
    // REST before RETR: from the marker on.
    c.expect("REST 4", 350).await;
    let addr = c.pasv().await;
    c.expect("RETR f", 150).await;
    assert_eq!(read_all(data_connect(addr).await).await, b"456789");
    assert_eq!(c.reply().await.code, 226);
    c.expect("REST 11", 350).await;
    c.pasv().await;
    c.expect("RETR f", 554).await;

    upload(&mut c, "APPE f", b"AB").await;
    assert_eq!(b.read("/f").await, b"0123456789AB");
    upload(&mut c, "APPE new", b"fresh").await;
    assert_eq!(b.read("/new").await, b"fresh");
    // REST before STOR: keep the first bytes, rewrite the rest.
    c.expect("REST 3", 350).await;
    upload(&mut c, "STOR f", b"xy").await;
    assert_eq!(b.read("/f").await, b"012xy");
    c.expect("REST 9", 350).await;
    c.pasv().await;
    c.expect("STOR f", 554).await;
    assert_eq!(b.read("/f").await, b"012xy");

    let opening = upload(&mut c, "STOU f", b"unique").await;
    assert!(opening.text().contains("FILE: f.1"), "{opening:?}");
    assert_eq!(b.read("/f.1").await, b"unique");
    assert_eq!(b.read("/f").await, b"012xy");
    let size = c.expect("SIZE f.1", 213).await;
    assert_eq!(size.text(), "6");
}

async fn abor_during_a_slow_retr(b: Backend) {
    let mut c = b.connect(config()).await;
    let data = stalled_retr(&mut c, &b).await;
    // STAT and NOOP are answered while the transfer runs.
    let status = c.expect("STAT", 211).await;
    assert!(
        status
            .lines
            .iter()
            .any(|l| l.starts_with("Transfer in progress")),
        "{status:?}"
    );
    c.expect("NOOP", 200).await;
    let aborted = c.expect("ABOR", 426).await;
    assert_eq!(aborted.text(), "Transfer aborted.");
    assert_eq!(c.reply().await.code, 226);
    c.expect("NOOP", 200).await;
    drop(data);

    let download = c.event(EventKind::Download).await;
    assert_eq!(download.code, Some(426));
    let commands = c.commands(0).await;
    assert!(
        commands.contains(&("RETR big".to_owned(), 426)),
        "{commands:?}"
    );
    assert!(commands.contains(&("ABOR".to_owned(), 226)), "{commands:?}");
}

async fn rnfr_is_forgotten_after_another_command(b: Backend) {
    let mut c = b.connect(config()).await;
    c.login().await;
    b.put("/x", b"x").await;
    c.expect("RNFR x", 350).await;
    c.expect("NOOP", 200).await;
    c.expect("RNTO y", 503).await;
    assert!(b.exists("/x").await);
    // Right after RNFR, RNTO works.
    c.expect("RNFR x", 350).await;
    c.expect("RNTO y", 250).await;
    assert!(b.exists("/y").await && !b.exists("/x").await);
}

async fn idle_timeout_does_not_fire_during_a_transfer(b: Backend) {
    // libunftp#281: an idle timeout that fired mid-transfer.
    let mut c = b
        .connect(Config {
            idle_timeout_secs: 1,
            ..config()
        })
        .await;
    let data = stalled_retr(&mut c, &b).await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    c.expect("ABOR", 426).await;
    assert_eq!(c.reply().await.code, 226);
    c.expect("NOOP", 200).await;
    drop(data);
}

async fn commands_pipelined_during_a_transfer_are_answered_in_order(b: Backend) {
    let mut c = b.connect(config()).await;
    c.login().await;
    let addr = c.pasv().await;
    c.expect("LIST", 150).await;
    // The data connection is not open yet, so the transfer is still running.
    c.send_raw(b"PWD\r\nNOOP\r\nQUIT\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    read_all(data_connect(addr).await).await;
    let mut codes = Vec::new();
    while let Some(line) = c.line().await {
        codes.push(line[..3].to_owned());
    }
    // Before the fix: NOOP's 200 came first, and PWD was never answered.
    assert_eq!(codes, ["226", "257", "200", "221"]);
    c.expect_closed().await;
}

/// Logs in and starts a RETR of a large file whose data connection is open but never read,
/// so the transfer stalls until ABOR. Returns the data connection.
async fn stalled_retr(c: &mut Client, b: &Backend) -> TcpStream {
    c.login().await;
    b.big("/big").await;
    let addr = c.pasv().await;
    c.expect("RETR big", 150).await;
    let data = data_connect(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    data
}

async fn shutdown_during_a_transfer_closes_after_abor(b: Backend) {
    let mut c = b.connect(config()).await;
    let _data = stalled_retr(&mut c, &b).await;
    c.session.do_send(Shutdown);
    // The transfer may go on; the session closes once it ends, here by ABOR.
    c.expect("ABOR", 426).await;
    assert_eq!(c.reply().await.code, 226);
    assert_eq!(c.reply().await.code, 421);
    c.expect_closed().await;
}

async fn quit_during_a_transfer_closes_after_abor(b: Backend) {
    let mut c = b.connect(config()).await;
    let _data = stalled_retr(&mut c, &b).await;
    c.send_raw(b"QUIT\r\n").await;
    c.expect("ABOR", 426).await;
    assert_eq!(c.reply().await.code, 226);
    assert_eq!(c.reply().await.code, 221);
    c.expect_closed().await;
}

#[actix::test]
async fn multi_line_replies() {
    let mut c = connect_stubs(config()).await.greeted().await;
    let feat = c.expect("FEAT", 211).await;
    assert_eq!(feat.lines.first().map(String::as_str), Some("Features:"));
    assert!(feat.lines.iter().any(|l| l == " EPSV"), "{feat:?}");
    assert_eq!(feat.text(), "End");
    let help = c.expect("HELP", 214).await;
    assert!(help.lines.len() > 2, "{help:?}");
    c.expect("NOOP", 200).await;
}

async fn no_data_connection_is_425(b: Backend) {
    let mut c = b
        .connect(Config {
            data_timeout_secs: 1,
            ..config()
        })
        .await;
    c.login().await;
    c.expect("LIST", 425).await;
    c.pasv().await;
    c.expect("LIST", 150).await;
    // Nobody connects to the data port.
    assert_eq!(c.reply().await.code, 425);
    c.expect("NOOP", 200).await;
}

#[actix::test]
async fn listing_with_a_burning_file_store_is_451() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.login().await;
    c.pasv().await;
    c.expect("LIST", 451).await;
    c.expect("NOOP", 200).await;
}
