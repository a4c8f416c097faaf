//! Every error a session meets, and the reply it becomes: one table, so that the code and the
//! text of a failure are chosen in one place, and every variant names its reply (no fallback).
//!
//! Pure: no I/O and no logging. What must reach the operator (local errors) is logged by the
//! session, stamped with its id and client address.

use crate::actors::account_registry::AuthError;
use crate::admission::Refusal;
use crate::codec::{CommandError, Reply, ReplyCode};
use crate::storage::vpath::PathError;
use crate::storage::{StoreError, is_out_of_space};
use crate::transfer::DataError;

/// A per-user limit that refused a logged-in session something (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_sessions_per_user` reached at login: 421, and the session closes.
    UserSessions,
    /// `max_transfers_per_user` reached: 425 for this transfer.
    Transfers,
}

/// The reply to a file-store error.
pub fn store(e: &StoreError) -> Reply {
    let (code, text) = match e {
        StoreError::NotFound => (ReplyCode::FileUnavailable, "No such file or directory."),
        StoreError::NotADirectory => (ReplyCode::FileUnavailable, "Not a directory."),
        StoreError::IsADirectory => (ReplyCode::FileUnavailable, "Is a directory."),
        StoreError::AlreadyExists => (ReplyCode::FileUnavailable, "File exists."),
        StoreError::NotEmpty => (ReplyCode::FileUnavailable, "Directory not empty."),
        StoreError::PermissionDenied => (ReplyCode::FileUnavailable, "Permission denied."),
        StoreError::InvalidName => (ReplyCode::NameNotAllowed, "File name not allowed."),
        StoreError::TooLong => (ReplyCode::NameNotAllowed, "File name too long."),
        StoreError::NoSpace => (
            ReplyCode::InsufficientStorage,
            "Insufficient storage space.",
        ),
        StoreError::Busy => (
            ReplyCode::FileBusy,
            "File busy: another upload is writing it.",
        ),
        StoreError::BadOffset => (
            ReplyCode::InvalidRestart,
            "Invalid REST parameter: beyond the end of the file.",
        ),
        StoreError::QuotaExceeded => (
            ReplyCode::ExceededStorage,
            "Quota exceeded: see SITE QUOTA.",
        ),
        StoreError::TimedOut => (
            ReplyCode::LocalError,
            "Wildcard expansion took too long: name fewer files.",
        ),
        StoreError::TooManyEntries(max) => {
            let text = format!("Directory has more than {max} entries: too many to list.");
            return Reply::new(ReplyCode::FileUnavailable, text);
        }
        StoreError::TooBigToRewrite(max) => {
            let text = format!(
                "File too large to append or resume on object storage (limit {max} bytes)."
            );
            return Reply::new(ReplyCode::FileUnavailable, text);
        }
        StoreError::TooManyToRename(max) => {
            let text = format!(
                "Directory holds more than {max} objects: too many to rename on object storage."
            );
            return Reply::new(ReplyCode::FileUnavailable, text);
        }
        StoreError::TooBigToRename(max) => {
            let text = format!("File too large to rename on object storage (limit {max} bytes).");
            return Reply::new(ReplyCode::FileUnavailable, text);
        }
        StoreError::Io(_) => (ReplyCode::LocalError, "Local error in processing."),
        StoreError::Interrupted => (
            ReplyCode::TransferAborted,
            "Connection lost; transfer aborted.",
        ),
    };
    Reply::new(code, text)
}

/// The reply to a login whose home directory cannot be made ready: 530 (the user is not
/// logged in), naming the code the store error would have had.
pub fn home_unavailable(e: &StoreError) -> Reply {
    Reply::new(
        ReplyCode::NotLoggedIn,
        format!("Home directory unavailable ({}).", store(e).code().as_u16()),
    )
}

/// The reply to an account error; a weak password is told the minimum length.
pub fn auth(e: &AuthError, min_password_length: usize) -> Reply {
    let (code, text) = match e {
        AuthError::BadName => (
            ReplyCode::BadArguments,
            "Bad user name: use 1-32 of a-z 0-9 . _ -, starting with a letter or digit.".to_owned(),
        ),
        AuthError::WeakPassword => (
            ReplyCode::BadArguments,
            format!(
                "Password too weak: use at least {min_password_length} characters, no control characters."
            ),
        ),
        AuthError::InviteRequired => (
            ReplyCode::BadArguments,
            "Registration needs an invitation: SITE REGISTER <user> <password> <code>.".to_owned(),
        ),
        AuthError::NameTaken => (
            ReplyCode::FileUnavailable,
            "That user name is taken.".to_owned(),
        ),
        AuthError::RegistrationClosed => (
            ReplyCode::FileUnavailable,
            "Registration is closed.".to_owned(),
        ),
        AuthError::BadInvite => (
            ReplyCode::FileUnavailable,
            "Invalid or used-up invitation code.".to_owned(),
        ),
        AuthError::TooManyRegistrations => (
            ReplyCode::FileUnavailable,
            "Too many registrations from your address in the last hour; try again later."
                .to_owned(),
        ),
        AuthError::WrongCredentials => (ReplyCode::NotLoggedIn, "Login incorrect.".to_owned()),
        AuthError::Corrupt(_) | AuthError::Io(_) => (
            ReplyCode::LocalError,
            "Local error in processing.".to_owned(),
        ),
    };
    Reply::new(code, text)
}

/// The final reply of a transfer that failed; the text is the error's own.
pub fn data(e: &DataError) -> Reply {
    let code = match e {
        DataError::NoConnection | DataError::Tls(_) => ReplyCode::CantOpenData,
        DataError::Network(_) => ReplyCode::TransferAborted,
        DataError::Local(io) if is_out_of_space(io) => ReplyCode::InsufficientStorage,
        DataError::Local(_) => ReplyCode::LocalError,
        DataError::QuotaExceeded => ReplyCode::ExceededStorage,
    };
    Reply::new(code, e.to_string())
}

/// The reply to a line that is not a valid command; the text is the error's own, but 522
/// names the network protocols this session can use (`protocols`, e.g. `1,2`).
pub fn command(e: &CommandError, protocols: &str) -> Reply {
    let code = match e {
        CommandError::TooLong | CommandError::Empty => ReplyCode::SyntaxError,
        CommandError::NotUtf8 | CommandError::MissingArgument(_) | CommandError::BadArgument(_) => {
            ReplyCode::BadArguments
        }
        CommandError::Unsupported(_) => ReplyCode::NotImplementedForParameter,
        CommandError::ProtocolNotSupported => {
            return Reply::new(
                ReplyCode::ProtocolNotSupported,
                format!("Network protocol not supported, use ({protocols})."),
            );
        }
    };
    Reply::new(code, e.to_string())
}

/// The reply to a client path refused before it reaches the store.
pub fn path(e: &PathError) -> Reply {
    let text = match e {
        PathError::InvalidName => "File name not allowed.",
        PathError::TooLong => "File name too long.",
    };
    Reply::new(ReplyCode::NameNotAllowed, text)
}

/// The reply to a connection or login refused by a server-wide cap or a ban: 421, closing.
pub fn refusal(r: Refusal) -> Reply {
    let text = match r {
        Refusal::ServerFull => "Too many users; try again later.",
        Refusal::AddressFull => "Too many connections from your address.",
        Refusal::Banned => "Too many failed logins from your address; try again later.",
    };
    Reply::new(ReplyCode::ServiceNotAvailable, text)
}

/// The reply to a request refused by a per-user limit.
pub fn limit(l: Limit) -> Reply {
    match l {
        Limit::UserSessions => Reply::new(
            ReplyCode::ServiceNotAvailable,
            "Too many sessions for this user; try again later.",
        ),
        Limit::Transfers => Reply::new(
            ReplyCode::CantOpenData,
            "Too many transfers at once for this user.",
        ),
    }
}

/// The reply when a service actor did not answer (its mailbox closed or overflowed).
pub fn service_failed() -> Reply {
    Reply::new(
        ReplyCode::LocalError,
        "Service temporarily unavailable; try again.",
    )
}

/// PASV, PORT or EPRT after `EPSV ALL` (RFC 2428 §4).
pub fn only_epsv() -> Reply {
    Reply::new(
        ReplyCode::BadSequence,
        "Only EPSV is allowed after EPSV ALL.",
    )
}

/// What a storage backend may be unable to do (see [`crate::storage::Capabilities`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// APPE.
    Append,
    /// REST before STOR.
    WriteAt,
    /// RNFR/RNTO of a directory.
    RenameDir,
    /// MFMT.
    SetMtime,
    /// SITE CHMOD.
    Chmod,
}

/// The refusal of a command the storage backend cannot carry out: 550.
pub fn unsupported(what: Unsupported) -> Reply {
    let text = match what {
        Unsupported::Append => "APPE: the storage does not support appending to files.",
        Unsupported::WriteAt => "REST+STOR: the storage does not support writing from an offset.",
        Unsupported::RenameDir => "RNFR: the storage does not support renaming directories.",
        Unsupported::SetMtime => "MFMT: the storage does not support setting modification times.",
        Unsupported::Chmod => "SITE CHMOD: the storage does not support permission bits.",
    };
    Reply::new(ReplyCode::FileUnavailable, text)
}

/// The reply when the file store did not answer the commit of an upload.
pub fn commit_failed() -> Reply {
    Reply::new(ReplyCode::LocalError, "Could not store the file.")
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::codec::Command;

    /// The wire form, which is what clients compare.
    fn wire(reply: &Reply) -> String {
        let mut buf = bytes::BytesMut::new();
        reply.encode(&mut buf);
        String::from_utf8(buf.to_vec()).expect("utf8")
    }

    fn io_error() -> io::Error {
        io::Error::other("boom")
    }

    #[test]
    fn every_store_error() {
        let cases: Vec<(StoreError, &str)> = vec![
            (StoreError::NotFound, "550 No such file or directory."),
            (StoreError::NotADirectory, "550 Not a directory."),
            (StoreError::IsADirectory, "550 Is a directory."),
            (StoreError::AlreadyExists, "550 File exists."),
            (StoreError::NotEmpty, "550 Directory not empty."),
            (StoreError::PermissionDenied, "550 Permission denied."),
            (
                StoreError::Busy,
                "450 File busy: another upload is writing it.",
            ),
            (
                StoreError::BadOffset,
                "554 Invalid REST parameter: beyond the end of the file.",
            ),
            (StoreError::InvalidName, "553 File name not allowed."),
            (StoreError::TooLong, "553 File name too long."),
            (StoreError::NoSpace, "452 Insufficient storage space."),
            (
                StoreError::QuotaExceeded,
                "552 Quota exceeded: see SITE QUOTA.",
            ),
            (
                StoreError::TooManyEntries(7),
                "550 Directory has more than 7 entries: too many to list.",
            ),
            (
                StoreError::TimedOut,
                "451 Wildcard expansion took too long: name fewer files.",
            ),
            (
                StoreError::TooBigToRewrite(512),
                "550 File too large to append or resume on object storage (limit 512 bytes).",
            ),
            (
                StoreError::TooManyToRename(9),
                "550 Directory holds more than 9 objects: too many to rename on object storage.",
            ),
            (
                StoreError::TooBigToRename(5),
                "550 File too large to rename on object storage (limit 5 bytes).",
            ),
            (StoreError::Io(io_error()), "451 Local error in processing."),
            (
                StoreError::Interrupted,
                "426 Connection lost; transfer aborted.",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(wire(&store(&e)), format!("{want}\r\n"), "{e:?}");
        }
        assert_eq!(
            wire(&home_unavailable(&StoreError::NoSpace)),
            "530 Home directory unavailable (452).\r\n"
        );
    }

    #[test]
    fn every_unsupported_command_is_550() {
        let cases = [
            (
                Unsupported::Append,
                "550 APPE: the storage does not support appending to files.\r\n",
            ),
            (
                Unsupported::WriteAt,
                "550 REST+STOR: the storage does not support writing from an offset.\r\n",
            ),
            (
                Unsupported::RenameDir,
                "550 RNFR: the storage does not support renaming directories.\r\n",
            ),
            (
                Unsupported::SetMtime,
                "550 MFMT: the storage does not support setting modification times.\r\n",
            ),
            (
                Unsupported::Chmod,
                "550 SITE CHMOD: the storage does not support permission bits.\r\n",
            ),
        ];
        for (what, want) in cases {
            assert_eq!(wire(&unsupported(what)), want, "{what:?}");
        }
    }

    #[test]
    fn every_auth_error() {
        let cases: Vec<(AuthError, &str)> = vec![
            (
                AuthError::BadName,
                "501 Bad user name: use 1-32 of a-z 0-9 . _ -, starting with a letter or digit.",
            ),
            (
                AuthError::WeakPassword,
                "501 Password too weak: use at least 9 characters, no control characters.",
            ),
            (
                AuthError::InviteRequired,
                "501 Registration needs an invitation: SITE REGISTER <user> <password> <code>.",
            ),
            (AuthError::NameTaken, "550 That user name is taken."),
            (AuthError::RegistrationClosed, "550 Registration is closed."),
            (
                AuthError::BadInvite,
                "550 Invalid or used-up invitation code.",
            ),
            (
                AuthError::TooManyRegistrations,
                "550 Too many registrations from your address in the last hour; try again later.",
            ),
            (AuthError::WrongCredentials, "530 Login incorrect."),
            (
                AuthError::Corrupt("x".into()),
                "451 Local error in processing.",
            ),
            (AuthError::Io(io_error()), "451 Local error in processing."),
        ];
        for (e, want) in cases {
            assert_eq!(wire(&auth(&e, 9)), format!("{want}\r\n"), "{e:?}");
        }
    }

    #[test]
    fn every_data_error() {
        let full = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let full_text = full.to_string();
        let quota = io::Error::from_raw_os_error(rustix::io::Errno::DQUOT.raw_os_error());
        let quota_text = quota.to_string();
        let cases: Vec<(DataError, String)> = vec![
            (
                DataError::NoConnection,
                "425 Failed to establish data connection.".into(),
            ),
            (
                DataError::Tls("no resumption".into()),
                "425 Cannot open a protected data connection: no resumption.".into(),
            ),
            (
                DataError::Network(io_error()),
                "426 Data connection closed; transfer aborted.".into(),
            ),
            (
                DataError::Local(io_error()),
                "451 Local error in processing: boom.".into(),
            ),
            (
                DataError::Local(full),
                format!("452 Local error in processing: {full_text}."),
            ),
            (
                DataError::Local(quota),
                format!("452 Local error in processing: {quota_text}."),
            ),
            (
                DataError::QuotaExceeded,
                "552 Quota exceeded: upload aborted, nothing stored.".into(),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(wire(&data(&e)), format!("{want}\r\n"), "{e:?}");
        }
    }

    #[test]
    fn every_command_error() {
        let cases: Vec<(CommandError, &str)> = vec![
            (CommandError::TooLong, "500 Command line too long."),
            (CommandError::Empty, "500 Empty command."),
            (CommandError::NotUtf8, "501 Command is not valid UTF-8."),
            (
                CommandError::MissingArgument("RETR"),
                "501 RETR needs an argument.",
            ),
            (
                CommandError::BadArgument("Bad mode.".into()),
                "501 Bad mode.",
            ),
            (CommandError::Unsupported("Only S.".into()), "504 Only S."),
            (
                CommandError::ProtocolNotSupported,
                "522 Network protocol not supported, use (2).",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(wire(&command(&e, "2")), format!("{want}\r\n"), "{e:?}");
        }
    }

    /// Moved from the parser's tests when the codes moved here: each bad line, parsed, gets
    /// the reply code the RFCs give it.
    #[test]
    fn parse_errors_get_their_codes() {
        let cases: &[(&str, u16)] = &[
            ("", 500),
            (" USER x", 500),
            ("USER", 501),
            ("RETR", 501),
            ("TYPE X", 501),
            ("TYPE E", 504),
            ("MODE B", 504),
            ("STRU R", 504),
            ("EPSV 3", 522),
            ("EPSV x", 501),
            ("SYST now", 501),
            ("SITE REGISTER onlyname", 501),
            ("SITE PASSWD one", 501),
            ("PORT 1,2,3", 501),
            ("PORT 1,2,3,4,5,300", 501),
            ("EPRT |3|x|1|", 522),
            ("EPRT |1|::1|1|", 501),
            ("EPRT 1|2|3", 501),
            ("REST x", 501),
            ("MFMT 2026 f", 501),
            ("MFMT 20261345000000 f", 501),
            ("MFMT 20261125203104", 501),
            ("SITE CHMOD 999 f", 501),
            ("SITE CHMOD 7777 f", 501),
            ("SITE CHMOD 644", 501),
            ("PROT X", 504),
            ("AUTH", 501),
        ];
        for (line, code) in cases {
            let err = Command::parse(line).expect_err(line);
            assert_eq!(command(&err, "1,2").code().as_u16(), *code, "line {line:?}");
        }
    }

    #[test]
    fn every_path_error() {
        assert_eq!(
            wire(&path(&PathError::InvalidName)),
            "553 File name not allowed.\r\n"
        );
        assert_eq!(
            wire(&path(&PathError::TooLong)),
            "553 File name too long.\r\n"
        );
    }

    #[test]
    fn every_refusal_and_limit() {
        let cases = [
            (
                refusal(Refusal::ServerFull),
                "421 Too many users; try again later.",
            ),
            (
                refusal(Refusal::AddressFull),
                "421 Too many connections from your address.",
            ),
            (
                refusal(Refusal::Banned),
                "421 Too many failed logins from your address; try again later.",
            ),
            (
                limit(Limit::UserSessions),
                "421 Too many sessions for this user; try again later.",
            ),
            (
                limit(Limit::Transfers),
                "425 Too many transfers at once for this user.",
            ),
            (
                service_failed(),
                "451 Service temporarily unavailable; try again.",
            ),
            (commit_failed(), "451 Could not store the file."),
        ];
        for (reply, want) in cases {
            assert_eq!(wire(&reply), format!("{want}\r\n"));
        }
    }
}
