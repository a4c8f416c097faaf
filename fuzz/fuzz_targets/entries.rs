//! The client's LIST and MLSD line parsers (and its word splitter) on arbitrary text and, for
//! LIST, an arbitrary "now" (it dates the lines without a year): no panic, every entry they
//! return has a usable name, and an MLSD time is an instant.
#![no_main]

use ferry::client::entries::{Modified, parse_list_line, parse_mlsx_line};
use ferry::client::words::{quote_word, split_commands, split_words};
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u32)| {
    let (line, now) = input;
    let now = Timestamp::from_second(i64::from(now)).expect("a u32 of seconds is in range");
    if let Some(e) = parse_list_line(line, now) {
        assert!(
            !e.name.is_empty() && e.name != "." && e.name != "..",
            "{e:?}"
        );
        assert!(line.contains(&e.name));
    }
    if let Some(e) = parse_mlsx_line(line) {
        assert!(!e.name.is_empty(), "{e:?}");
        assert!(line.trim_end_matches('\r').ends_with(&e.name));
        if let Some(m) = &e.modified {
            assert!(matches!(m, Modified::At(_)), "{m:?}");
        }
    }
    let _ = split_commands(line);
    let _ = split_words(line);
    assert_eq!(
        split_words(&quote_word(line)).as_deref(),
        Ok(&[line.to_owned()][..]),
        "quote_word round-trips"
    );
});
