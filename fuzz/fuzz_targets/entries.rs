//! The client's LIST and MLSD line parsers (and its word splitter) on arbitrary text: no panic,
//! and every entry they return has a usable name.
#![no_main]

use ferry::client::entries::{parse_list_line, parse_mlsx_line};
use ferry::client::words::{quote_word, split_commands, split_words};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    if let Some(e) = parse_list_line(line) {
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
            assert_eq!(m.len(), "YYYY-MM-DD HH:MM:SS".len());
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
