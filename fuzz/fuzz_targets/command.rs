//! `Command::parse` on arbitrary UTF-8: no panic; every accessor works on the result; and the
//! audit-log rendering (`Display`) of a parsed command parses back to the same command, except
//! where `Display` deliberately differs from the wire form (passwords shown as `***`, PORT and
//! EPRT shown as a socket address).
#![no_main]

use ferry::codec::command::{Command, SiteCommand};
use libfuzzer_sys::fuzz_target;

/// Commands whose `Display` is not a wire line by design.
fn display_is_wire_form(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::Pass(_)
            | Command::Site(SiteCommand::Register { .. } | SiteCommand::Passwd { .. })
            | Command::Port(_)
            | Command::Eprt(_)
    )
}

fuzz_target!(|line: &str| {
    let Ok(cmd) = Command::parse(line) else {
        return;
    };
    let _ = (
        cmd.verb(),
        cmd.carries_password(),
        cmd.is_transfer(),
        cmd.is_write(),
        cmd.allowed_before_login(),
    );
    let shown = cmd.to_string();
    assert!(
        shown.starts_with(cmd.verb()),
        "{shown:?} starts with the verb"
    );
    if display_is_wire_form(&cmd) {
        assert_eq!(
            Command::parse(&shown).as_ref(),
            Ok(&cmd),
            "{line:?} shown as {shown:?}"
        );
    }
});
