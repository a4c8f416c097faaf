//! The client's reply assembler on arbitrary lines (no panic, replies well-formed), and the
//! server's reply encoder on arbitrary text (the assembler reads back the same code and the
//! same number of lines).
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use ferry::codec::reply_parser::ReplyAssembler;
use ferry::codec::{Reply, ReplyCode};
use libfuzzer_sys::fuzz_target;

/// Codes of every class (1yz to 5yz) for the encoder.
const CODES: &[ReplyCode] = &[
    ReplyCode::OpeningData,
    ReplyCode::Ok,
    ReplyCode::SystemStatus,
    ReplyCode::PathCreated,
    ReplyCode::PendingFurtherInfo,
    ReplyCode::ServiceNotAvailable,
    ReplyCode::LocalError,
    ReplyCode::SyntaxError,
    ReplyCode::FileUnavailable,
    ReplyCode::InvalidRestart,
];

#[derive(Debug, Arbitrary)]
struct Input {
    /// Lines as a server might send them.
    received: Vec<String>,
    /// A reply for the encoder: an index into `CODES`, and the text lines.
    code: u16,
    text: Vec<String>,
}

fuzz_target!(|input: Input| {
    let mut assembler = ReplyAssembler::new();
    for line in &input.received {
        if let Ok(Some(reply)) = assembler.push(line) {
            assert!((100..600).contains(&reply.code));
            assert!(!reply.lines.is_empty());
            let _ = reply.to_string();
        }
    }

    if input.text.is_empty() {
        return;
    }
    let code = CODES[usize::from(input.code) % CODES.len()];
    let reply = Reply::multi(code, input.text.clone());
    let mut wire = BytesMut::new();
    reply.encode(&mut wire);
    let wire = std::str::from_utf8(&wire).expect("UTF-8 in, UTF-8 out");
    let body = wire.strip_suffix("\r\n").expect("ends with CRLF");
    let lines: Vec<&str> = body.split("\r\n").collect();
    assert_eq!(
        lines.len(),
        input.text.len(),
        "one wire line per text line: {wire:?}"
    );
    let mut assembler = ReplyAssembler::new();
    let mut got = Vec::new();
    for line in &lines {
        assert!(
            !line.contains(['\r', '\n', '\0']),
            "no break inside a line: {line:?}"
        );
        if let Some(reply) = assembler.push(line).expect("starts with a code") {
            got.push(reply);
        }
    }
    assert_eq!(got.len(), 1, "exactly one reply, at the end: {wire:?}");
    assert_eq!(got[0].code, code.as_u16());
    assert_eq!(got[0].lines.len(), input.text.len());
    for (i, (sent, read)) in input.text.iter().zip(&got[0].lines).enumerate() {
        let sent = sent.replace(['\r', '\n', '\0'], " ");
        let middle = i > 0 && i + 1 < input.text.len();
        let escaped = middle && read.strip_prefix(' ') == Some(sent.as_str());
        assert!(
            *read == sent || escaped,
            "line {i}: {sent:?} read as {read:?}"
        );
    }
});
