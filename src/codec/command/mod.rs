//! `Command`: one variant per FTP verb, parsed from one control line. Pure: no I/O.
//!
//! Paths stay raw `String`s here; only the file store turns them into real paths. Passwords are
//! [`Password`]s, so the derived `Debug` of a command can be logged.
//!
//! Files: `parse.rs` (the parser, [`Command::parse`]); the enum, its verb tables and its
//! redacted `Display` are here.

mod parse;

use std::fmt;
use std::net::SocketAddr;
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

#[cfg(test)]
mod tests;
