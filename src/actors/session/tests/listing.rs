//! Listings streamed a page at a time (LIST, NLST, MLSD): the bytes are those of the whole
//! listing, on each backend; on S3 they span many pages, pass the listing limit, and end in
//! 451 when the bucket goes away midway.

use std::time::SystemTime;

use super::backends::{Backend, on_every_backend};
use super::*;
use crate::codec::listing::{self, Facts, Role};
use crate::storage::vpath::VPath;

on_every_backend! {
    a_big_listing_streams_the_bytes_of_the_whole_listing,
}

/// Names in the big directory: more than two S3 pages of 1000 keys.
const BIG: usize = 2500;

fn vp(path: &str) -> VPath {
    VPath::root().resolve(path).expect("valid test path")
}

/// `command` over a fresh passive connection: the data it sent, and its final reply code.
async fn listed(c: &mut Client, command: &str) -> (Vec<u8>, u16) {
    let addr = c.pasv().await;
    c.expect(command, 150).await;
    let data = read_all(data_connect(addr).await).await;
    (data, c.reply().await.code)
}

async fn a_big_listing_streams_the_bytes_of_the_whole_listing(b: Backend) {
    b.many("/big", BIG).await;
    let mut c = b.connect(config()).await;
    c.login().await;
    let whole = b.storage.list("alice", &vp("/big")).await.expect("list");
    assert_eq!(whole.entries.len(), BIG);

    let (long, code) = listed(&mut c, "LIST big").await;
    assert_eq!(code, 226);
    let now = SystemTime::now();
    let expected = listing::to_wire(whole.entries.iter().map(|e| listing::list_line(e, now)));
    assert!(long == expected, "LIST differs from the whole listing");

    let (names, code) = listed(&mut c, "NLST big").await;
    assert_eq!(code, 226);
    let expected = listing::to_wire(whole.entries.iter().map(|e| format!("big/{}", e.name)));
    assert!(names == expected, "NLST differs from the whole listing");

    let (facts, code) = listed(&mut c, "MLSD big").await;
    assert_eq!(code, 226);
    let line = |e, role| listing::mlsx_line(e, Facts::all(), role, true);
    let expected = listing::to_wire(
        whole.this.iter().map(|d| line(d, Role::Current)).chain(
            whole
                .parent
                .iter()
                .map(|p| line(p, Role::Parent))
                .chain(whole.entries.iter().map(|e| line(e, Role::Entry))),
        ),
    );
    assert!(facts == expected, "MLSD differs from the whole listing");

    // What is known before the first page is still answered before 150.
    c.pasv().await;
    c.expect("MLSD big/f0000", 501).await;
    c.expect("LIST nowhere", 550).await;
    c.expect("MLSD nowhere", 550).await;
    c.expect("NOOP", 200).await;
}

#[actix::test]
async fn an_s3_listing_past_the_listing_limit_streams_whole() {
    let b = Backend::s3_with(|store| store.with_listing_limit(100));
    b.many("/big", BIG).await;
    let mut c = b.connect(config()).await;
    c.login().await;
    let (long, code) = listed(&mut c, "LIST big").await;
    assert_eq!(code, 226);
    let long = String::from_utf8(long).expect("UTF-8");
    assert_eq!(long.lines().count(), BIG);
    assert!(long.lines().last().is_some_and(|l| l.ends_with(" f2499")));
    let (names, code) = listed(&mut c, "NLST big").await;
    assert_eq!(code, 226);
    assert_eq!(names.split(|&b| b == b'\n').count(), BIG + 1);
    // A whole listing is still limited.
    c.expect("STAT big", 550).await;
    c.expect("NOOP", 200).await;
}

#[actix::test]
async fn an_s3_listing_whose_bucket_goes_away_midway_is_451_and_the_session_goes_on() {
    // One key a page: the listing is hundreds of requests long, so it is midway when the
    // first line has arrived.
    let mut b = Backend::s3_with(|store| store.with_listing_page(1));
    b.many("/big", 300).await;
    let mut c = b.connect(config()).await;
    c.login().await;
    let addr = c.pasv().await;
    c.expect("LIST big", 150).await;
    let mut data = data_connect(addr).await;
    let mut first = [0u8; 1];
    tokio::time::timeout(WAIT, data.read_exact(&mut first))
        .await
        .expect("timed out waiting for the first line")
        .expect("data read");
    b.kill_s3();
    let rest = read_all(data).await;
    let lines = rest.iter().filter(|&&b| b == b'\n').count();
    assert!(lines < 300, "the listing ended before the bucket went away");
    assert_eq!(c.reply().await.code, 451);
    c.expect("NOOP", 200).await;
    c.expect("PWD", 257).await;
}
