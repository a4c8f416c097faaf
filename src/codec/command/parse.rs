//! [`Command::parse`]: one control line to one [`Command`] or a [`CommandError`], with the
//! parsers of the structured arguments (TYPE, EPSV, PORT/EPRT, OPTS, SITE, MFMT, LIST flags).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{Command, CommandError, Opts, SiteCommand, TransferType};
use crate::codec::Password;

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
