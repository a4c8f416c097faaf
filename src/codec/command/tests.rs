//! The parser's table of lines, the redaction of passwords and the login gate.

use super::*;

fn ok(line: &str) -> Command {
    Command::parse(line).unwrap_or_else(|e| panic!("{line:?} failed: {e}"))
}

#[test]
fn table_of_lines() {
    let cases: Vec<(&str, Command)> = vec![
        ("USER alice", Command::User("alice".into())),
        ("user alice", Command::User("alice".into())),
        ("PASS", Command::Pass(Password::new(""))),
        (
            "PASS secret with spaces",
            Command::Pass(Password::new("secret with spaces")),
        ),
        ("QUIT", Command::Quit),
        ("noop", Command::Noop),
        ("TYPE I", Command::Type(TransferType::Image)),
        ("TYPE a", Command::Type(TransferType::Ascii)),
        ("TYPE A N", Command::Type(TransferType::Ascii)),
        ("TYPE L 8", Command::Type(TransferType::Image)),
        ("MODE s", Command::Mode('S')),
        ("STRU F", Command::Stru('F')),
        ("XPWD", Command::Pwd),
        ("XCWD dir", Command::Cwd("dir".into())),
        ("CWD my dir ", Command::Cwd("my dir ".into())),
        ("XMKD a", Command::Mkd("a".into())),
        ("XRMD a", Command::Rmd("a".into())),
        ("XCUP", Command::Cdup),
        ("EPSV", Command::Epsv(None)),
        ("EPSV 2", Command::Epsv(Some(2))),
        ("EPSV ALL", Command::EpsvAll),
        ("LIST", Command::List(None)),
        ("LIST -la", Command::List(None)),
        ("LIST -a -l sub", Command::List(Some("sub".into()))),
        ("NLST -l", Command::Nlst(None)),
        ("MLSD", Command::Mlsd(None)),
        ("MLST x", Command::Mlst(Some("x".into()))),
        ("OPTS UTF8 ON", Command::Opts(Opts::Utf8(true))),
        (
            "OPTS MLST type;size;",
            Command::Opts(Opts::Mlst(vec!["type".into(), "size".into()])),
        ),
        ("HELP retr", Command::Help(Some("RETR".into()))),
        ("STAT", Command::Stat(None)),
        (
            "SITE REGISTER bob pass word",
            Command::Site(SiteCommand::Register {
                user: "bob".into(),
                password: Password::new("pass word"),
            }),
        ),
        (
            "site passwd a b",
            Command::Site(SiteCommand::Passwd {
                old: Password::new("a"),
                new: Password::new("b"),
            }),
        ),
        ("SITE help", Command::Site(SiteCommand::Help)),
        ("SITE quota", Command::Site(SiteCommand::Quota)),
        (
            "SITE CHMOD 755 a b",
            Command::Site(SiteCommand::Chmod {
                mode: 0o755,
                path: "a b".into(),
            }),
        ),
        (
            "SITE FOO x",
            Command::Site(SiteCommand::Unknown("FOO".into())),
        ),
        ("FOO bar", Command::Unknown("FOO".into())),
        (
            "PORT 127,0,0,1,4,1",
            Command::Port("127.0.0.1:1025".parse().expect("addr")),
        ),
        (
            "EPRT |2|::1|5000|",
            Command::Eprt("[::1]:5000".parse().expect("addr")),
        ),
        (
            "eprt !1!10.0.0.1!21!",
            Command::Eprt("10.0.0.1:21".parse().expect("addr")),
        ),
        ("REST 100", Command::Rest(100)),
        ("APPE log.txt", Command::Appe("log.txt".into())),
        ("STOU", Command::Stou(None)),
        ("STOU name", Command::Stou(Some("name".into()))),
        ("HASH f", Command::Hash("f".into())),
        ("AUTH tls", Command::Auth("TLS".into())),
        ("PBSZ 0", Command::Pbsz("0".into())),
        ("PROT p", Command::Prot('P')),
        ("PROT S", Command::Prot('S')),
        ("CCC", Command::Ccc),
        ("OPTS HASH", Command::Opts(Opts::Hash(None))),
        (
            "OPTS HASH md5",
            Command::Opts(Opts::Hash(Some("md5".into()))),
        ),
        ("REIN", Command::Rein),
        ("ACCT x", Command::Acct),
        ("SMNT /", Command::Smnt),
        (
            "MFMT 20261125203104 a b",
            Command::Mfmt {
                time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_638_664),
                path: "a b".into(),
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(ok(line), want, "line {line:?}");
    }
}

/// Found by the `command` fuzz target: a whitespace-only argument was taken as an empty
/// one, so `HELP  ` answered "Unknown command", `PBSZ  ` was accepted, and `SITE  x` became
/// the subcommand "" (and none of them re-parsed from their own rendering).
#[test]
fn whitespace_only_argument_is_missing() {
    assert_eq!(ok("HELP   "), Command::Help(None));
    assert_eq!(ok("HELP  retr "), Command::Help(Some("RETR".into())));
    for line in ["AUTH  ", "PBSZ \t", "SITE   "] {
        assert!(
            matches!(Command::parse(line), Err(CommandError::MissingArgument(_))),
            "{line:?}"
        );
    }
    assert_eq!(ok("SITE  help"), Command::Site(SiteCommand::Help));
    assert_eq!(
        ok("SITE  CHMOD 644 a "),
        Command::Site(SiteCommand::Chmod {
            mode: 0o644,
            path: "a ".into()
        })
    );
    for line in ["HELP  ", "AUTH  tls", "PBSZ  0 ", "SITE  foo bar"] {
        let cmd = ok(line);
        assert_eq!(ok(&cmd.to_string()), cmd, "{line:?}");
    }
}

#[test]
fn display_redacts_passwords() {
    assert_eq!(ok("PASS hunter22").to_string(), "PASS ***");
    assert_eq!(
        ok("SITE REGISTER bob s3cretpass").to_string(),
        "SITE REGISTER bob ***"
    );
    assert_eq!(
        ok("SITE PASSWD old newpass1").to_string(),
        "SITE PASSWD *** ***"
    );
    assert_eq!(ok("RETR a b.txt").to_string(), "RETR a b.txt");
    assert!(!format!("{:?}", ok("PASS hunter22")).contains("hunter22"));
}

#[test]
fn login_gate() {
    assert!(ok("USER a").allowed_before_login());
    assert!(ok("SITE REGISTER a bbbbbbbb").allowed_before_login());
    assert!(!ok("SITE PASSWD a b").allowed_before_login());
    assert!(!ok("RETR x").allowed_before_login());
    assert!(!ok("STAT x").allowed_before_login());
    assert!(!ok("PASV").allowed_before_login());
}

#[test]
fn every_verb_has_help_and_parses() {
    for (verb, _) in VERBS {
        let line = format!("{verb} x");
        if let Ok(Command::Unknown(v)) = Command::parse(&line) {
            panic!("{v} is in HELP but not parsed");
        }
    }
}
