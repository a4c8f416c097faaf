//! The server's control-channel decoder fed arbitrary bytes in arbitrary chunks.
//!
//! Invariants: no panic, no decoder error; exactly one item per LF (a reply is owed for every
//! line, over-long ones included); the same items whatever the chunking; and after any garbage,
//! "\r\nNOOP\r\n" still decodes to NOOP as the last item.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use ferry::codec::{Command, FtpCodec, Inbound};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

#[derive(Debug, Arbitrary)]
struct Input {
    max_line: u8,
    /// Where to cut the stream: each value is a chunk length.
    cuts: Vec<u8>,
    bytes: Vec<u8>,
}

fn feed(max_line: usize, chunks: &[&[u8]]) -> Vec<Inbound> {
    let mut codec = FtpCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).expect("the decoder never errs") {
            out.push(item);
        }
        assert!(
            buf.len() <= max_line + 1 || buf.contains(&b'\n'),
            "a partial line is never kept past the limit"
        );
    }
    out
}

fuzz_target!(|input: Input| {
    // NOOP needs 4 bytes; keep the limit small so over-long lines are common.
    let max_line = 4 + usize::from(input.max_line);
    let mut stream = input.bytes;
    stream.extend_from_slice(b"\r\nNOOP\r\n");

    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest = &stream[..];
    for cut in &input.cuts {
        let n = usize::from(*cut).min(rest.len());
        let (head, tail) = rest.split_at(n);
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);

    let chunked = feed(max_line, &chunks);
    let whole = feed(max_line, &[&stream]);
    let lines = stream.iter().filter(|b| **b == b'\n').count();
    assert_eq!(whole.len(), lines, "one item per line end");
    assert_eq!(chunked, whole, "chunking does not change the items");
    assert_eq!(
        whole.last(),
        Some(&Inbound::Command(Command::Noop)),
        "in sync after garbage"
    );
});
