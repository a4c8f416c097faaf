//! `Command`: one variant per FTP verb, parsed from one control line. Pure: no I/O.
//!
//! Paths stay raw `String`s here; only the file store turns them into real paths. Passwords are
//! [`Password`]s, so the derived `Debug` of a command can be logged.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use super::Password;

/// The representation type set by `TYPE` (RFC 959 §3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    /// `TYPE A` (optionally `A N`): text, CRLF line ends on the wire.
    Ascii,
    /// `TYPE I` or `TYPE L 8`: bytes as they are.
    Image,
}

/// `SITE` subcommands (RFC 959 §4.1.3 leaves their syntax to the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteCommand {
    /// `SITE REGISTER <user> <password> [<code>]`: create an account (before login). When
    /// registration is by invitation, the session splits the code (the last word) off.
    Register {
        /// Requested account name, not yet validated.
        user: String,
        /// The new password: the rest of the line, spaces included.
        password: Password,
    },
    /// `SITE PASSWD <old> <new>`: change one's own password.
    Passwd {
        /// Current password.
        old: Password,
        /// New password.
        new: Password,
    },
    /// `SITE CHMOD <mode> <path>`: set permission bits (octal) inside the home.
    Chmod {
        /// Permission bits, at most 0o777.
        mode: u32,
        /// The file or directory.
        path: String,
    },
    /// `SITE QUOTA`: show one's usage and limits.
    Quota,
    /// `SITE HELP`: list the SITE subcommands.
    Help,
    /// Any other subcommand.
    Unknown(String),
}

/// `OPTS` arguments we understand (RFC 2389).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opts {
    /// `OPTS UTF8 ON|OFF` (RFC 2640 draft usage by clients).
    Utf8(bool),
    /// `OPTS MLST fact;fact;` (RFC 3659 §7.9): the facts to show; may be empty.
    Mlst(Vec<String>),
    /// `OPTS HASH [algorithm]` (draft-bryan-ftpext-hash §3.2): show or select the algorithm.
    Hash(Option<String>),
    /// Any other option: answered 501.
    Other(String),
}

/// One control-channel command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER <name>` (RFC 959 §4.1.1).
    User(String),
    /// `PASS <password>`; the password may be empty.
    Pass(Password),
    /// `QUIT`.
    Quit,
    /// `NOOP`.
    Noop,
    /// `SYST`.
    Syst,
    /// `FEAT` (RFC 2389).
    Feat,
    /// `OPTS` (RFC 2389).
    Opts(Opts),
    /// `HELP [verb]`.
    Help(Option<String>),
    /// `TYPE`.
    Type(TransferType),
    /// `MODE S` (only stream mode is supported).
    Mode(char),
    /// `STRU F` (only file structure is supported).
    Stru(char),
    /// `ALLO <n>`: superfluous here.
    Allo,
    /// `PWD` / `XPWD`.
    Pwd,
    /// `CWD` / `XCWD`.
    Cwd(String),
    /// `CDUP` / `XCUP`.
    Cdup,
    /// `MKD` / `XMKD`.
    Mkd(String),
    /// `RMD` / `XRMD`.
    Rmd(String),
    /// `DELE`.
    Dele(String),
    /// `RNFR`.
    Rnfr(String),
    /// `RNTO`.
    Rnto(String),
    /// `SIZE` (RFC 3659 §4).
    Size(String),
    /// `MDTM` (RFC 3659 §3).
    Mdtm(String),
    /// `PASV`.
    Pasv,
    /// `EPSV [1|2]` (RFC 2428 §3): the network protocol asked for, if any; `EPSV ALL` is
    /// [`Command::EpsvAll`].
    Epsv(Option<u8>),
    /// `EPSV ALL`.
    EpsvAll,
    /// `LIST [path]`; `ls` flags such as `-la` are dropped.
    List(Option<String>),
    /// `NLST [path]`.
    Nlst(Option<String>),
    /// `MLSD [path]` (RFC 3659 §7).
    Mlsd(Option<String>),
    /// `MLST [path]` (RFC 3659 §7).
    Mlst(Option<String>),
    /// `RETR <path>`.
    Retr(String),
    /// `STOR <path>`.
    Stor(String),
    /// `STAT [path]`.
    Stat(Option<String>),
    /// `ABOR`.
    Abor,
    /// `PORT h1,h2,h3,h4,p1,p2`: active mode to this address.
    Port(SocketAddr),
    /// `EPRT |proto|addr|port|` (RFC 2428 §2).
    Eprt(SocketAddr),
    /// `REST <offset>` (RFC 3659 §5, stream mode).
    Rest(u64),
    /// `APPE <path>`.
    Appe(String),
    /// `STOU [name]`: store under a unique name.
    Stou(Option<String>),
    /// `ACCT`: accounts are not needed here (202).
    Acct,
    /// `SMNT`: not supported (502).
    Smnt,
    /// `REIN`: back to the state right after the greeting.
    Rein,
    /// `MFMT <time> <path>` (draft-somers-ftp-mfxx): set the modification time.
    Mfmt {
        /// The new time, UTC.
        time: SystemTime,
        /// The file.
        path: String,
    },
    /// `HASH <path>` (draft-bryan-ftpext-hash).
    Hash(String),
    /// `AUTH <mechanism>` (RFC 4217 §4): `TLS` (also `TLS-C`, `SSL`, `TLS-P`).
    Auth(String),
    /// `PBSZ <size>` (RFC 4217 §8): always 0 for TLS.
    Pbsz(String),
    /// `PROT <level>` (RFC 4217 §9): `C` clear or `P` private data connections.
    Prot(char),
    /// `CCC` (RFC 4217 §6): refused, the control connection stays encrypted.
    Ccc,
    /// `SITE ...`.
    Site(SiteCommand),
    /// A verb this server does not implement: 502.
    Unknown(String),
}

/// Why a line is not a valid command. Each variant's doc names its reply code; the session's
/// reply table sends it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The line is longer than the configured limit: 500.
    #[error("Command line too long.")]
    TooLong,
    /// The line is not UTF-8: 501.
    #[error("Command is not valid UTF-8.")]
    NotUtf8,
    /// The line holds no verb: 500.
    #[error("Empty command.")]
    Empty,
    /// A required argument is missing: 501.
    #[error("{0} needs an argument.")]
    MissingArgument(&'static str),
    /// An argument is malformed: 501.
    #[error("{0}")]
    BadArgument(String),
    /// An argument value is valid but not supported: 504.
    #[error("{0}")]
    Unsupported(String),
    /// EPRT or EPSV names a network protocol other than IPv4 (1) or IPv6 (2): 522 (RFC 2428
    /// §2, §3); the session names the protocols it listens on.
    #[error("Network protocol not supported, use (1,2).")]
    ProtocolNotSupported,
}

/// Verbs this server implements, with their syntax, for `HELP` and the login gate.
pub const VERBS: &[(&str, &str)] = &[
    ("ABOR", "ABOR (abort transfer)"),
    ("ACCT", "ACCT <account> (not needed)"),
    ("ALLO", "ALLO <bytes> (ignored)"),
    ("AUTH", "AUTH TLS (RFC 4217)"),
    (
        "CCC",
        "CCC (refused: the control connection stays encrypted)",
    ),
    ("APPE", "APPE <file> (append)"),
    ("CDUP", "CDUP (change to parent directory)"),
    ("CWD", "CWD <path>"),
    ("DELE", "DELE <file>"),
    ("EPRT", "EPRT |proto|addr|port| (RFC 2428)"),
    ("EPSV", "EPSV [ALL] (RFC 2428)"),
    ("FEAT", "FEAT (list extensions)"),
    ("HASH", "HASH <file> (draft-bryan-ftpext-hash)"),
    ("HELP", "HELP [verb]"),
    ("LIST", "LIST [path] (ls -l style)"),
    ("MDTM", "MDTM <file> (RFC 3659)"),
    (
        "MFMT",
        "MFMT <YYYYMMDDHHMMSS> <file> (set modification time)",
    ),
    ("MKD", "MKD <path>"),
    ("MLSD", "MLSD [dir] (RFC 3659)"),
    ("MLST", "MLST [path] (RFC 3659)"),
    ("MODE", "MODE S"),
    ("NLST", "NLST [path] (names only)"),
    ("NOOP", "NOOP"),
    (
        "OPTS",
        "OPTS UTF8 ON | OPTS MLST <facts> | OPTS HASH [algorithm]",
    ),
    ("PASS", "PASS <password>"),
    ("PASV", "PASV"),
    ("PBSZ", "PBSZ 0 (RFC 4217)"),
    ("PORT", "PORT h1,h2,h3,h4,p1,p2"),
    ("PWD", "PWD (print working directory)"),
    ("PROT", "PROT <C|P> (RFC 4217)"),
    ("QUIT", "QUIT"),
    ("REIN", "REIN (log out, keep the connection)"),
    ("REST", "REST <offset> (RFC 3659, before RETR/STOR)"),
    ("RETR", "RETR <file>"),
    ("RMD", "RMD <dir>"),
    ("RNFR", "RNFR <old name>"),
    ("RNTO", "RNTO <new name>"),
    (
        "SITE",
        "SITE <REGISTER|PASSWD|CHMOD|QUOTA|HELP> ... (see HELP SITE)",
    ),
    ("SIZE", "SIZE <file> (RFC 3659)"),
    ("SMNT", "SMNT (not supported)"),
    ("STAT", "STAT [path]"),
    ("STOR", "STOR <file>"),
    ("STOU", "STOU [name] (store under a unique name)"),
    ("STRU", "STRU F"),
    ("SYST", "SYST"),
    ("TYPE", "TYPE <A|I|L 8>"),
    ("USER", "USER <name>"),
    ("XCUP", "XCUP (alias of CDUP)"),
    ("XCWD", "XCWD <path> (alias of CWD)"),
    ("XMKD", "XMKD <path> (alias of MKD)"),
    ("XPWD", "XPWD (alias of PWD)"),
    ("XRMD", "XRMD <dir> (alias of RMD)"),
];

/// `SITE` subcommands with their syntax, for `HELP SITE` and `SITE HELP`.
pub const SITE_COMMANDS: &[(&str, &str)] = &[
    (
        "REGISTER",
        "SITE REGISTER <user> <password> [<invitation code>] (create an account, before login)",
    ),
    ("PASSWD", "SITE PASSWD <old> <new> (change your password)"),
    (
        "CHMOD",
        "SITE CHMOD <octal mode> <path> (set permission bits)",
    ),
    ("QUOTA", "SITE QUOTA (your usage and limits: bytes, files)"),
    ("HELP", "SITE HELP (this list)"),
];

impl Command {
    /// Parses one control line (without its line end).
    ///
    /// Verbs are case-insensitive; the argument starts after the first space and is kept as is
    /// (file names may hold spaces, and leading spaces are significant to some servers; a
    /// single separating space is removed, as RFC 959 §5.3 has exactly one).
    ///
    /// # Errors
    /// [`CommandError`] for a missing or malformed argument.
    pub fn parse(line: &str) -> Result<Command, CommandError> {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v, a),
            None => (line, ""),
        };
        if verb.is_empty() {
            return Err(CommandError::Empty);
        }
        let verb = verb.to_ascii_uppercase();
        let opt_arg = || (!arg.is_empty()).then(|| arg.to_owned());
        let need = |name: &'static str| {
            if arg.is_empty() {
                Err(CommandError::MissingArgument(name))
            } else {
                Ok(arg.to_owned())
            }
        };
        // For verbs whose argument is a single word: only spaces count as no argument.
        let need_word = |name: &'static str| {
            let word = arg.trim();
            if word.is_empty() {
                Err(CommandError::MissingArgument(name))
            } else {
                Ok(word)
            }
        };
        let no_arg = |cmd: Command| {
            if arg.trim().is_empty() {
                Ok(cmd)
            } else {
                Err(CommandError::BadArgument(format!(
                    "{verb} takes no argument."
                )))
            }
        };
        Ok(match verb.as_str() {
            "USER" => Command::User(need("USER")?),
            "PASS" => Command::Pass(Password::new(arg)),
            "QUIT" => Command::Quit,
            "NOOP" => Command::Noop,
            "SYST" => no_arg(Command::Syst)?,
            "FEAT" => no_arg(Command::Feat)?,
            "OPTS" => Command::Opts(parse_opts(&need("OPTS")?)),
            "HELP" => Command::Help(need_word("HELP").ok().map(str::to_ascii_uppercase)),
            "TYPE" => Command::Type(parse_type(&need("TYPE")?)?),
            "MODE" => Command::Mode(single_letter(&need("MODE")?, &['S'])?),
            "STRU" => Command::Stru(single_letter(&need("STRU")?, &['F'])?),
            "ALLO" => Command::Allo,
            "PWD" | "XPWD" => no_arg(Command::Pwd)?,
            "CWD" | "XCWD" => Command::Cwd(need("CWD")?),
            "CDUP" | "XCUP" => no_arg(Command::Cdup)?,
            "MKD" | "XMKD" => Command::Mkd(need("MKD")?),
            "RMD" | "XRMD" => Command::Rmd(need("RMD")?),
            "DELE" => Command::Dele(need("DELE")?),
            "RNFR" => Command::Rnfr(need("RNFR")?),
            "RNTO" => Command::Rnto(need("RNTO")?),
            "SIZE" => Command::Size(need("SIZE")?),
            "MDTM" => Command::Mdtm(need("MDTM")?),
            "PASV" => no_arg(Command::Pasv)?,
            "EPSV" => parse_epsv(arg)?,
            "LIST" => Command::List(strip_ls_flags(arg)),
            "NLST" => Command::Nlst(strip_ls_flags(arg)),
            "MLSD" => Command::Mlsd(opt_arg()),
            "MLST" => Command::Mlst(opt_arg()),
            "RETR" => Command::Retr(need("RETR")?),
            "STOR" => Command::Stor(need("STOR")?),
            "STAT" => Command::Stat(opt_arg()),
            "ABOR" => Command::Abor,
            "PORT" => Command::Port(parse_port(&need("PORT")?)?),
            "EPRT" => Command::Eprt(parse_eprt(&need("EPRT")?)?),
            "REST" => Command::Rest(
                need("REST")?
                    .trim()
                    .parse()
                    .map_err(|_| CommandError::BadArgument("REST needs a byte offset.".into()))?,
            ),
            "APPE" => Command::Appe(need("APPE")?),
            "STOU" => Command::Stou(opt_arg()),
            "ACCT" => Command::Acct,
            "SMNT" => Command::Smnt,
            "REIN" => no_arg(Command::Rein)?,
            "MFMT" => parse_mfmt(&need("MFMT")?)?,
            "HASH" => Command::Hash(need("HASH")?),
            "AUTH" => Command::Auth(need_word("AUTH")?.to_ascii_uppercase()),
            "PBSZ" => Command::Pbsz(need_word("PBSZ")?.to_owned()),
            "PROT" => Command::Prot(single_letter(&need("PROT")?, &['C', 'P', 'S', 'E'])?),
            "CCC" => no_arg(Command::Ccc)?,
            "SITE" => Command::Site(parse_site(need_word("SITE").map(|_| arg.trim_start())?)?),
            _ => Command::Unknown(verb),
        })
    }

    /// The canonical verb, as logged and as checked by the login gate.
    pub fn verb(&self) -> &str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Quit => "QUIT",
            Command::Noop => "NOOP",
            Command::Syst => "SYST",
            Command::Feat => "FEAT",
            Command::Opts(_) => "OPTS",
            Command::Help(_) => "HELP",
            Command::Type(_) => "TYPE",
            Command::Mode(_) => "MODE",
            Command::Stru(_) => "STRU",
            Command::Allo => "ALLO",
            Command::Pwd => "PWD",
            Command::Cwd(_) => "CWD",
            Command::Cdup => "CDUP",
            Command::Mkd(_) => "MKD",
            Command::Rmd(_) => "RMD",
            Command::Dele(_) => "DELE",
            Command::Rnfr(_) => "RNFR",
            Command::Rnto(_) => "RNTO",
            Command::Size(_) => "SIZE",
            Command::Mdtm(_) => "MDTM",
            Command::Pasv => "PASV",
            Command::Epsv(_) | Command::EpsvAll => "EPSV",
            Command::List(_) => "LIST",
            Command::Nlst(_) => "NLST",
            Command::Mlsd(_) => "MLSD",
            Command::Mlst(_) => "MLST",
            Command::Retr(_) => "RETR",
            Command::Stor(_) => "STOR",
            Command::Stat(_) => "STAT",
            Command::Abor => "ABOR",
            Command::Port(_) => "PORT",
            Command::Eprt(_) => "EPRT",
            Command::Rest(_) => "REST",
            Command::Appe(_) => "APPE",
            Command::Stou(_) => "STOU",
            Command::Acct => "ACCT",
            Command::Smnt => "SMNT",
            Command::Rein => "REIN",
            Command::Mfmt { .. } => "MFMT",
            Command::Hash(_) => "HASH",
            Command::Auth(_) => "AUTH",
            Command::Pbsz(_) => "PBSZ",
            Command::Prot(_) => "PROT",
            Command::Ccc => "CCC",
            Command::Site(_) => "SITE",
            Command::Unknown(verb) => verb,
        }
    }

    /// Does this command send a user name or password (refused in the clear when TLS is
    /// required for login)?
    pub fn carries_password(&self) -> bool {
        matches!(
            self,
            Command::User(_)
                | Command::Pass(_)
                | Command::Site(SiteCommand::Register { .. } | SiteCommand::Passwd { .. })
        )
    }

    /// Does this command use the data connection?
    pub fn is_transfer(&self) -> bool {
        matches!(
            self,
            Command::Retr(_)
                | Command::Stor(_)
                | Command::Appe(_)
                | Command::Stou(_)
                | Command::List(_)
                | Command::Nlst(_)
                | Command::Mlsd(_)
        )
    }

    /// Does this command change files? Read-only accounts and anonymous users get 550.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Command::Stor(_)
                | Command::Appe(_)
                | Command::Stou(_)
                | Command::Dele(_)
                | Command::Mkd(_)
                | Command::Rmd(_)
                | Command::Rnfr(_)
                | Command::Rnto(_)
                | Command::Mfmt { .. }
                | Command::Site(SiteCommand::Chmod { .. })
        )
    }

    /// May this command run before login? (RFC 959 leaves the set to the server; this is
    /// the usual one, plus `SITE REGISTER` and `SITE HELP`.)
    pub fn allowed_before_login(&self) -> bool {
        matches!(
            self,
            Command::User(_)
                | Command::Pass(_)
                | Command::Quit
                | Command::Noop
                | Command::Syst
                | Command::Feat
                | Command::Opts(_)
                | Command::Help(_)
                | Command::Stat(None)
                | Command::Abor
                | Command::Acct
                | Command::Rein
                | Command::Auth(_)
                | Command::Pbsz(_)
                | Command::Prot(_)
                | Command::Ccc
                | Command::Unknown(_)
                | Command::Site(
                    SiteCommand::Register { .. } | SiteCommand::Help | SiteCommand::Unknown(_)
                )
        )
    }
}

/// Renders the command for the audit log: verb and argument, passwords as `***`.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.verb();
        match self {
            Command::User(a)
            | Command::Cwd(a)
            | Command::Mkd(a)
            | Command::Rmd(a)
            | Command::Dele(a)
            | Command::Rnfr(a)
            | Command::Rnto(a)
            | Command::Size(a)
            | Command::Mdtm(a)
            | Command::Retr(a)
            | Command::Stor(a)
            | Command::Appe(a)
            | Command::Hash(a)
            | Command::Auth(a)
            | Command::Pbsz(a) => write!(f, "{verb} {a}"),
            Command::Prot(c) => write!(f, "{verb} {c}"),
            Command::Stou(Some(a)) => write!(f, "{verb} {a}"),
            Command::Port(addr) | Command::Eprt(addr) => write!(f, "{verb} {addr}"),
            Command::Rest(offset) => write!(f, "{verb} {offset}"),
            Command::Mfmt { time, path } => {
                write!(f, "{verb} {} {path}", super::listing::timeval(*time))
            }
            Command::Pass(p) => write!(f, "{verb} {p}"),
            Command::Help(Some(a))
            | Command::List(Some(a))
            | Command::Nlst(Some(a))
            | Command::Mlsd(Some(a))
            | Command::Mlst(Some(a))
            | Command::Stat(Some(a)) => write!(f, "{verb} {a}"),
            Command::Type(TransferType::Ascii) => write!(f, "{verb} A"),
            Command::Type(TransferType::Image) => write!(f, "{verb} I"),
            Command::Mode(c) | Command::Stru(c) => write!(f, "{verb} {c}"),
            Command::EpsvAll => write!(f, "{verb} ALL"),
            Command::Epsv(Some(proto)) => write!(f, "{verb} {proto}"),
            Command::Opts(Opts::Utf8(on)) => {
                write!(f, "{verb} UTF8 {}", if *on { "ON" } else { "OFF" })
            }
            Command::Opts(Opts::Mlst(facts)) => write!(f, "{verb} MLST {}", facts.join(";")),
            Command::Opts(Opts::Hash(Some(a))) => write!(f, "{verb} HASH {a}"),
            Command::Opts(Opts::Hash(None)) => write!(f, "{verb} HASH"),
            Command::Opts(Opts::Other(o)) => write!(f, "{verb} {o}"),
            Command::Site(SiteCommand::Register { user, password }) => {
                write!(f, "{verb} REGISTER {user} {password}")
            }
            Command::Site(SiteCommand::Passwd { old, new }) => {
                write!(f, "{verb} PASSWD {old} {new}")
            }
            Command::Site(SiteCommand::Help) => write!(f, "{verb} HELP"),
            Command::Site(SiteCommand::Quota) => write!(f, "{verb} QUOTA"),
            Command::Site(SiteCommand::Chmod { mode, path }) => {
                write!(f, "{verb} CHMOD {mode:o} {path}")
            }
            Command::Site(SiteCommand::Unknown(s)) => write!(f, "{verb} {s}"),
            _ => f.write_str(verb),
        }
    }
}

fn parse_type(arg: &str) -> Result<TransferType, CommandError> {
    let upper = arg.trim().to_ascii_uppercase();
    let mut words = upper.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("A"), None | Some("N"), None) => Ok(TransferType::Ascii),
        (Some("I"), None, None) | (Some("L"), Some("8"), None) => Ok(TransferType::Image),
        (Some("A" | "E"), Some("T" | "C"), None) | (Some("E" | "L"), _, None) => Err(
            CommandError::Unsupported(format!("TYPE {upper} not supported.")),
        ),
        _ => Err(CommandError::BadArgument(format!("Unknown TYPE {upper}."))),
    }
}

fn single_letter(arg: &str, supported: &[char]) -> Result<char, CommandError> {
    let upper = arg.trim().to_ascii_uppercase();
    let mut chars = upper.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if supported.contains(&c) => Ok(c),
        (Some(_), None) => Err(CommandError::Unsupported(format!("{upper} not supported."))),
        _ => Err(CommandError::BadArgument(format!("Bad argument {upper}."))),
    }
}

fn parse_epsv(arg: &str) -> Result<Command, CommandError> {
    match arg.trim().to_ascii_uppercase().as_str() {
        "" => Ok(Command::Epsv(None)),
        "1" => Ok(Command::Epsv(Some(1))),
        "2" => Ok(Command::Epsv(Some(2))),
        "ALL" => Ok(Command::EpsvAll),
        other if other.chars().all(|c| c.is_ascii_digit()) => {
            Err(CommandError::ProtocolNotSupported)
        }
        _ => Err(CommandError::BadArgument("Bad EPSV argument.".into())),
    }
}

fn parse_opts(arg: &str) -> Opts {
    let (name, value) = arg.split_once(' ').unwrap_or((arg, ""));
    match name.to_ascii_uppercase().as_str() {
        "UTF8" | "UTF-8" => match value.trim().to_ascii_uppercase().as_str() {
            "ON" | "" => Opts::Utf8(true),
            "OFF" => Opts::Utf8(false),
            _ => Opts::Other(arg.to_owned()),
        },
        "HASH" => Opts::Hash((!value.trim().is_empty()).then(|| value.trim().to_owned())),
        "MLST" => Opts::Mlst(
            value
                .split(';')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_ascii_lowercase)
                .collect(),
        ),
        _ => Opts::Other(arg.to_owned()),
    }
}

fn parse_site(arg: &str) -> Result<SiteCommand, CommandError> {
    let (sub, rest) = arg.split_once(' ').unwrap_or((arg, ""));
    Ok(match sub.to_ascii_uppercase().as_str() {
        "REGISTER" => {
            let (user, password) = rest
                .split_once(' ')
                .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                .ok_or(CommandError::MissingArgument(
                    "SITE REGISTER <user> <password>",
                ))?;
            SiteCommand::Register {
                user: user.to_owned(),
                password: Password::new(password),
            }
        }
        "PASSWD" => {
            let (old, new) = rest
                .split_once(' ')
                .filter(|(o, n)| !o.is_empty() && !n.is_empty())
                .ok_or(CommandError::MissingArgument("SITE PASSWD <old> <new>"))?;
            SiteCommand::Passwd {
                old: Password::new(old),
                new: Password::new(new),
            }
        }
        "CHMOD" => {
            let (mode, path) = rest
                .split_once(' ')
                .filter(|(m, p)| !m.is_empty() && !p.is_empty())
                .ok_or(CommandError::MissingArgument("SITE CHMOD <mode> <path>"))?;
            let mode = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    CommandError::BadArgument("Mode must be octal permission bits (0-777).".into())
                })?;
            SiteCommand::Chmod {
                mode,
                path: path.to_owned(),
            }
        }
        "HELP" => SiteCommand::Help,
        "QUOTA" => SiteCommand::Quota,
        other => SiteCommand::Unknown(other.to_owned()),
    })
}

/// `h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2).
fn parse_port(arg: &str) -> Result<SocketAddr, CommandError> {
    let bad = || CommandError::BadArgument("PORT needs h1,h2,h3,h4,p1,p2.".into());
    let numbers: Vec<u8> = arg
        .trim()
        .split(',')
        .map(|n| n.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [a, b, c, d, p1, p2] = numbers[..] else {
        return Err(bad());
    };
    let port = u16::from(p1) << 8 | u16::from(p2);
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
}

/// `<d>proto<d>addr<d>port<d>` with any delimiter (RFC 2428 §2).
fn parse_eprt(arg: &str) -> Result<SocketAddr, CommandError> {
    let bad = || CommandError::BadArgument("EPRT needs |proto|address|port|.".into());
    let arg = arg.trim();
    let delim = arg.chars().next().ok_or_else(bad)?;
    let parts: Vec<&str> = arg.split(delim).collect();
    let ["", proto, addr, port, ""] = parts[..] else {
        return Err(bad());
    };
    let ip: IpAddr = match proto {
        "1" => IpAddr::V4(addr.parse().map_err(|_| bad())?),
        "2" => IpAddr::V6(addr.parse().map_err(|_| bad())?),
        _ => return Err(CommandError::ProtocolNotSupported),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port))
}

/// `MFMT YYYYMMDDHHMMSS[.sss] <path>`: the time is UTC.
fn parse_mfmt(arg: &str) -> Result<Command, CommandError> {
    let bad = || CommandError::BadArgument("MFMT needs YYYYMMDDHHMMSS and a path.".into());
    let (stamp, path) = arg.split_once(' ').ok_or_else(bad)?;
    if path.is_empty() {
        return Err(bad());
    }
    let digits = stamp.split('.').next().unwrap_or("");
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits[r].parse::<u8>().map_err(|_| bad());
    let year: i32 = digits[..4].parse().map_err(|_| bad())?;
    let month = time::Month::try_from(num(4..6)?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(year, month, num(6..8)?).map_err(|_| bad())?;
    let clock = time::Time::from_hms(num(8..10)?, num(10..12)?, num(12..14)?).map_err(|_| bad())?;
    let when = time::PrimitiveDateTime::new(date, clock).assume_utc();
    Ok(Command::Mfmt {
        time: when.into(),
        path: path.to_owned(),
    })
}

/// Drops leading `ls` flags (`-la`, `-a -l`) that clients send with LIST/NLST, as vsftpd and
/// pure-ftpd do; a name that merely starts with `-` can still be listed as `./-name`.
fn strip_ls_flags(arg: &str) -> Option<String> {
    let mut rest = arg;
    loop {
        let trimmed = rest.trim_start();
        match trimmed.strip_prefix('-') {
            Some(flags)
                if !flags.is_empty()
                    && flags
                        .chars()
                        .take_while(|c| *c != ' ')
                        .all(|c| c.is_ascii_alphanumeric()) =>
            {
                rest = flags.split_once(' ').map_or("", |(_, r)| r);
            }
            _ => return (!trimmed.is_empty()).then(|| trimmed.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
