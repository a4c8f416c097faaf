//! Property tests (proptest) for the pure parts: the control-channel decoder, the reply encoder
//! and assembler, `VPath::resolve`, the command parser, and the client's line parsers and word
//! splitter. The same invariants are fuzzed without a case limit by the targets in `fuzz/`.

use bytes::BytesMut;
use ferry::client::entries::{parse_list_line, parse_mlsx_line};
use ferry::client::words::{quote_word, split_commands, split_words};
use ferry::codec::command::{SiteCommand, VERBS};
use ferry::codec::reply_parser::ReplyAssembler;
use ferry::codec::{Command, CommandError, FtpCodec, Inbound, Reply, ReplyCode};
use ferry::storage::vpath::{PathError, VPath};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Cases per property: enough to matter, few enough that the file runs in a few seconds.
const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// Control-channel bytes: mostly arbitrary, with line ends, Telnet IAC and printable text
/// over-represented so lines, CRLF pairs and IAC sequences are common.
fn wire_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            2 => Just(b'\n'),
            2 => Just(b'\r'),
            1 => Just(0xFF),
            4 => b' '..=b'~',
        ],
        0..max,
    )
}

/// Feeds `chunks` one after the other, decoding everything available after each.
fn decode_chunks(max_line: usize, chunks: &[&[u8]]) -> Vec<Inbound> {
    let mut codec = FtpCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).expect("the decoder never errs") {
            out.push(item);
        }
        assert!(
            buf.len() <= max_line + 1,
            "partial line kept past the limit"
        );
    }
    out
}

/// Cuts `bytes` into pieces of the given lengths (the rest is the last piece).
fn cut<'a>(bytes: &'a [u8], lengths: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    for len in lengths {
        let (head, tail) = rest.split_at((*len).min(rest.len()));
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

fn line_ends(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}

/// Codes of every class (1yz to 5yz) for the reply-encoding properties.
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

proptest! {
    #![proptest_config(config())]

    /// No input panics the decoder, and every LF-terminated line yields exactly one item
    /// (a reply is owed for each), over-long lines included as one `TooLong`.
    #[test]
    fn decoder_yields_one_item_per_line_end(bytes in wire_bytes(600), max_line in 4usize..80) {
        let items = decode_chunks(max_line, &[&bytes]);
        prop_assert_eq!(items.len(), line_ends(&bytes));
    }

    /// After any garbage (over-long, not UTF-8, IAC halves...) a CRLF and a NOOP decode to NOOP.
    #[test]
    fn decoder_stays_in_sync_after_garbage(
        garbage in wire_bytes(600),
        max_line in 4usize..80,
        lengths in prop::collection::vec(0usize..100, 0..12),
    ) {
        let mut stream = garbage;
        stream.extend_from_slice(b"\r\nNOOP\r\n");
        let items = decode_chunks(max_line, &cut(&stream, &lengths));
        prop_assert_eq!(items.len(), line_ends(&stream));
        prop_assert_eq!(items.last(), Some(&Inbound::Command(Command::Noop)));
    }

    /// Splitting the same byte stream at arbitrary points gives the same items as one chunk.
    #[test]
    fn decoder_items_do_not_depend_on_chunking(
        bytes in wire_bytes(600),
        max_line in 4usize..80,
        lengths in prop::collection::vec(0usize..100, 0..12),
    ) {
        let whole = decode_chunks(max_line, &[&bytes]);
        let chunked = decode_chunks(max_line, &cut(&bytes, &lengths));
        prop_assert_eq!(chunked, whole);
    }

    /// A line longer than the limit is one `TooLong` however it arrives, and the next works.
    #[test]
    fn over_long_line_is_one_item(
        len in 0usize..400,
        max_line in 4usize..80,
        lengths in prop::collection::vec(0usize..100, 0..12),
    ) {
        let mut stream = vec![b'x'; len];
        stream.extend_from_slice(b"\r\nNOOP\r\n");
        let items = decode_chunks(max_line, &cut(&stream, &lengths));
        prop_assert_eq!(items.len(), 2);
        if len > max_line {
            prop_assert_eq!(&items[0], &Inbound::Malformed(CommandError::TooLong));
        } else {
            prop_assert!(items[0] != Inbound::Malformed(CommandError::TooLong));
        }
        prop_assert_eq!(&items[1], &Inbound::Command(Command::Noop));
    }

    /// `Reply::encode` never breaks a line: every CRLF ends a line that starts with the code
    /// (first and last line) or is a middle line of a multi-line reply, and the client's
    /// assembler reads back one reply with the same code and the same lines.
    #[test]
    fn reply_encoding_round_trips_through_the_assembler(
        code in prop::sample::select(CODES),
        text in prop::collection::vec(
            prop_oneof![any::<String>(), "[0-9 \r\n-]{0,6}", "[\r\n\0a-z0-9 ]{0,20}"],
            1..6,
        ),
    ) {
        let mut wire = BytesMut::new();
        Reply::multi(code, text.clone()).encode(&mut wire);
        let wire = String::from_utf8(wire.to_vec()).expect("UTF-8");
        let body = wire.strip_suffix("\r\n").expect("ends with CRLF");
        let lines: Vec<&str> = body.split("\r\n").collect();
        prop_assert_eq!(lines.len(), text.len());
        let prefix = code.as_u16().to_string();
        for (i, line) in lines.iter().enumerate() {
            prop_assert!(!line.contains(['\r', '\n', '\0']), "break inside {:?}", line);
            let last = i + 1 == lines.len();
            if i == 0 || last {
                let sep = if last { ' ' } else { '-' };
                prop_assert!(line.starts_with(&format!("{prefix}{sep}")), "{:?}", line);
            } else {
                let digits = line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit);
                prop_assert!(!digits, "middle line looks like a code: {:?}", line);
            }
        }
        let mut assembler = ReplyAssembler::new();
        let mut replies = Vec::new();
        for line in &lines {
            if let Some(reply) = assembler.push(line).expect("well-formed") {
                replies.push(reply);
            }
        }
        prop_assert_eq!(replies.len(), 1);
        prop_assert_eq!(replies[0].code, code.as_u16());
        prop_assert_eq!(replies[0].lines.len(), text.len());
    }

    /// The assembler never panics on arbitrary lines and only returns replies with a code.
    #[test]
    fn reply_assembler_takes_any_lines(lines in prop::collection::vec(
        prop_oneof![any::<String>(), "[0-9]{3}[ -]?.{0,10}", "2[0-9]{2}-?"],
        0..12,
    )) {
        let mut assembler = ReplyAssembler::new();
        for line in &lines {
            if let Ok(Some(reply)) = assembler.push(line) {
                prop_assert!((100..600).contains(&reply.code));
                prop_assert!(!reply.lines.is_empty());
            }
        }
    }

    /// `VPath::resolve`: the result is absolute, normalised and never above the root; a
    /// relative argument without ".." stays below the cwd; resolving is idempotent.
    #[test]
    fn vpath_resolve_invariants(cwd in path_text(), arg in path_text()) {
        let Ok(cwd) = VPath::root().resolve(&cwd) else { return Ok(()); };
        match cwd.resolve(&arg) {
            Ok(path) => {
                let s = path.as_str();
                prop_assert!(s.starts_with('/'));
                prop_assert!(s.len() <= 4096);
                prop_assert!(s == "/" || !s.ends_with('/'));
                if s != "/" {
                    for part in s[1..].split('/') {
                        prop_assert!(!part.is_empty() && part != "." && part != "..", "{:?}", s);
                    }
                }
                prop_assert_eq!(VPath::root().resolve(s), Ok(path.clone()));
                if !arg.starts_with('/') && !arg.split('/').any(|p| p == "..") {
                    prop_assert!(
                        cwd.is_root() || s == cwd.as_str() || s.starts_with(&format!("{cwd}/")),
                        "{:?} from {:?} gave {:?}", arg, cwd, path
                    );
                }
                prop_assert_eq!(
                    path.resolve("..").ok(),
                    Some(path.parent().unwrap_or_else(VPath::root))
                );
            }
            Err(PathError::InvalidName) => prop_assert!(arg.contains(['\0', '\r', '\n'])),
            Err(PathError::TooLong) => {}
        }
    }

    /// A parsed command's audit rendering parses back to the same command, except where the
    /// rendering deliberately differs from the wire (passwords as `***`, PORT/EPRT as an
    /// address).
    #[test]
    fn command_display_reparses(line in command_line()) {
        if let Ok(cmd) = Command::parse(&line) {
            let shown = cmd.to_string();
            let wire_form = !matches!(
                cmd,
                Command::Pass(_)
                    | Command::Site(SiteCommand::Register { .. } | SiteCommand::Passwd { .. })
                    | Command::Port(_)
                    | Command::Eprt(_)
            );
            if wire_form {
                prop_assert_eq!(Command::parse(&shown), Ok(cmd), "{:?} shown as {:?}", line, shown);
            }
        }
    }

    /// The client's split_words reads back what quote_word wrote, for any word.
    #[test]
    fn quote_word_round_trips(word in prop_oneof![any::<String>(), "[ \"'\\\\;a\t]{0,12}"]) {
        prop_assert_eq!(split_words(&quote_word(&word)), Ok(vec![word]));
    }

    /// Several quoted words, joined by spaces, split back into the same words.
    #[test]
    fn quoted_words_split_back(words in prop::collection::vec(
        prop_oneof![any::<String>(), "[ \"'\\\\;a]{0,8}"],
        0..6,
    )) {
        let line = words.iter().map(|w| quote_word(w)).collect::<Vec<_>>().join(" ");
        prop_assert_eq!(split_words(&line), Ok(words));
    }

    /// The client's LIST/MLSD line parsers and command splitter never panic, and every entry
    /// has a usable name.
    #[test]
    fn listing_parsers_take_any_line(line in prop_oneof![
        any::<String>(),
        "[-dlbcps][rwx-]{9} {1,3}[0-9]{1,3} [a-z]{1,5} [a-z]{1,5} [0-9]{1,6} [A-Z][a-z]{2} {1,2}[0-9]{1,2} [0-9:]{4,5} .{0,12}",
        "([a-zA-Z]{1,6}=[^; ]{0,16};){0,4} ?.{0,12}",
    ]) {
        if let Some(e) = parse_list_line(&line, jiff::Timestamp::now()) {
            prop_assert!(!e.name.is_empty() && e.name != "." && e.name != "..");
        }
        if let Some(e) = parse_mlsx_line(&line) {
            prop_assert!(!e.name.is_empty());
            prop_assert!(line.trim_end_matches('\r').ends_with(&e.name));
        }
        let _ = split_commands(&line);
    }
}

/// Path arguments built from the interesting components, or arbitrary text.
fn path_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(
            prop_oneof![
                Just(""), Just("."), Just(".."), Just("..."), Just("a"), Just("b c"),
                Just("\\.."), Just("é"), Just("x\0"), Just("..x"),
            ],
            0..10,
        ).prop_map(|parts| parts.join("/")),
        1 => any::<String>(),
    ]
}

/// A control line: a known verb (any case) or arbitrary text, then an optional argument.
fn command_line() -> impl Strategy<Value = String> {
    let verb = prop_oneof![
        4 => prop::sample::select(VERBS.iter().map(|(v, _)| *v).collect::<Vec<_>>())
            .prop_map(str::to_owned),
        1 => "[a-zA-Z]{0,5}",
    ];
    let arg = prop_oneof![
        Just(String::new()),
        " .{0,20}",
        " (UTF8|MLST|HASH|REGISTER|PASSWD|CHMOD|HELP|-la|ALL|A|I|L 8|S|F|P) ?.{0,12}",
        " [0-9,|.:]{0,24}",
        " [0-9]{14} .{0,8}",
        any::<String>(),
    ];
    (verb, arg).prop_map(|(v, a)| format!("{v}{a}"))
}
