//! Regression benchmarks for the pure parts of the control channel: framing and parsing
//! command lines, encoding replies, and formatting listings. `cargo bench --bench codec`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::codec::entry::{FileInfo, FileKind};
use ferry::codec::listing::{self, Facts, Role};
use ferry::codec::{Command, FtpCodec, Reply, ReplyCode};
use tokio_util::codec::Decoder;

/// A realistic session's worth of command lines.
const SESSION: &[u8] = b"USER alice\r\nPASS correct-horse\r\nTYPE I\r\nEPSV\r\nLIST -la\r\n\
CWD some dir/with spaces\r\nMLSD\r\nREST 1048576\r\nRETR big file.bin\r\nSTOR upload.dat\r\n\
SITE CHMOD 644 upload.dat\r\nMFMT 20261125203104 upload.dat\r\nNOOP\r\nQUIT\r\n";

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(SESSION.len() as u64));
    group.bench_function("session lines", |b| {
        b.iter(|| {
            let mut codec = FtpCodec::new(4096);
            let mut buf = BytesMut::from(SESSION);
            let mut n = 0;
            while let Ok(Some(item)) = codec.decode(&mut buf) {
                black_box(item);
                n += 1;
            }
            n
        });
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    let lines: Vec<&str> = std::str::from_utf8(SESSION)
        .expect("ascii")
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .collect();
    c.bench_function("parse command lines", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(Command::parse(black_box(line)));
            }
        });
    });
}

fn encode(c: &mut Criterion) {
    let feat = Reply::multi(
        ReplyCode::SystemStatus,
        [
            "Features:",
            " EPSV",
            " MDTM",
            " MLST type*;size*;",
            " SIZE",
            " UTF8",
            "End",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
    );
    let pwd = Reply::path("/some \"quoted\" dir", "is the current directory.");
    c.bench_function("encode replies", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            black_box(&feat).encode(&mut out);
            black_box(&pwd).encode(&mut out);
            out
        });
    });
}

fn listings(c: &mut Criterion) {
    let now = SystemTime::now();
    let entries: Vec<FileInfo> = (0..1000)
        .map(|i| FileInfo {
            name: format!("file number {i}.dat"),
            kind: if i % 10 == 0 {
                FileKind::Dir
            } else {
                FileKind::File
            },
            size: i * 4096,
            modified: now - Duration::from_secs(i * 3600),
            mode: 0o644,
            nlink: 1,
            unique: format!("fe00g{i:x}"),
        })
        .collect();
    let mut group = c.benchmark_group("listing of 1000 entries");
    group.bench_function("LIST", |b| {
        b.iter(|| listing::to_wire(entries.iter().map(|e| listing::list_line(e, now))));
    });
    group.bench_function("MLSD", |b| {
        b.iter(|| {
            listing::to_wire(
                entries
                    .iter()
                    .map(|e| listing::mlsx_line(e, Facts::all(), Role::Entry, true)),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, decode, parse, encode, listings);
criterion_main!(benches);
