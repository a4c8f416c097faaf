//! Operator commands behind `ferryd user ...` and `ferryd log`: plain functions over the data
//! directory that return text to print. No argument parsing here (that is `src/bin/ferryd.rs`),
//! and no running server needed: they work on the same files the server reads, through the
//! backends [`crate::wiring`] builds for both.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use cli_table::Cell;

use crate::accounts::invites::Invite;
use crate::accounts::modify;
use crate::actors::account_registry::{
    AccountRecord, AccountStore, AuthError, UserName, check_password, hash_password,
};
use crate::actors::audit_log::{Event, EventKind};
use crate::audit::table::TableQuery;
use crate::codec::Password;
use crate::config::{Config, Quota};
use crate::db::{Database, DbError};
use crate::quota::{QuotaLedger, QuotaReport};
use crate::storage::StoreError;
use crate::storage::s3::S3SetupError;
use crate::wiring;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A bad name, a weak password, a taken name, a corrupt account file.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No account of that name.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// The two typed passwords differ.
    #[error("passwords do not match")]
    PasswordMismatch,
    /// Standard input ended before a password line.
    #[error("no password on standard input")]
    NoPassword,
    /// A password prompt without a terminal to show it on.
    #[error(
        "no terminal to ask for the password: use --password-stdin to read it from one line of standard input"
    )]
    NoTerminal,
    /// The home directory could not be created.
    #[error("home directory: {0}")]
    Store(#[from] StoreError),
    /// `user add` of a name whose deleted account left files behind, without `--adopt-home`.
    #[error(
        "{name}: a deleted account's files remain ({}); `ferryd user add {name} --adopt-home` gives them to the new account, `ferryd user del {name} --purge` removes them",
        paths_list(.paths)
    )]
    Remains {
        /// The account name.
        name: String,
        /// What remains.
        paths: Vec<PathBuf>,
    },
    /// The S3 settings are incomplete.
    #[error(transparent)]
    S3(#[from] S3SetupError),
    /// The cluster's database (`database_url`) cannot be used.
    #[error(transparent)]
    Database(#[from] DbError),
    /// A part of the data directory could not be prepared.
    #[error(transparent)]
    DataDir(#[from] wiring::DataDirError),
    /// A file, the terminal or the table output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Whether the data directory holds at least one account file.
pub fn holds_accounts(config: &Config) -> bool {
    fs::read_dir(config.accounts_dir()).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|ext| ext == "json"))
    })
}

/// Paths for a message, comma-separated.
fn paths_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates an account (read-only when asked: it may list and download, never write) and its
/// home directory `homes_dir/<name>` (mode 0700). Files a deleted account of that name left
/// (its home, its usage ledger) are given to the new account only with `adopt_home`, and its
/// usage is then recounted from the home; without it they refuse the name.
///
/// # Errors
/// [`AuthError::BadName`], [`AuthError::WeakPassword`] (per `config.min_password_length`),
/// [`AuthError::NameTaken`], [`AdminError::Remains`], or an I/O error.
pub fn user_add(
    config: &Config,
    name: &str,
    password: &Password,
    iterations: u32,
    read_only: bool,
    adopt_home: bool,
) -> Result<(), AdminError> {
    let name = UserName::parse(name)?;
    check_password(password, config.min_password_length)?;
    let database = wiring::tool_database(config)?;
    let store = wiring::accounts(config, database.as_ref())?;
    if store.load(&name)?.is_some() {
        return Err(AuthError::NameTaken.into());
    }
    let left = wiring::remains(config, database.as_ref())?.of(&name)?;
    if !left.is_empty() && !adopt_home {
        return Err(AdminError::Remains {
            name: name.to_string(),
            paths: left,
        });
    }
    let hash = hash_password(password, iterations)?;
    let mut record = AccountRecord::new(name.clone(), hash);
    record.read_only = read_only;
    record.quota = config.default_quota();
    store.create(&record)?;
    wiring::create_home(config, name.as_str())?;
    if !left.is_empty() {
        ledger(config, store, database.as_ref())?.recount(name.as_str())?;
    }
    Ok(())
}

/// What [`user_del`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The account record was removed (false: only remains were purged).
    pub account: bool,
    /// Removed with `--purge`: home and usage ledger.
    pub removed: Vec<PathBuf>,
    /// Kept without `--purge`; they keep the name reserved.
    pub kept: Vec<PathBuf>,
}

impl Deleted {
    /// What `ferryd user del` reports: what went, and what was kept and how to deal with it.
    pub fn summary(&self, name: &str) -> String {
        let what = if self.account {
            format!("deleted {name}")
        } else {
            format!("no account {name}")
        };
        if !self.removed.is_empty() {
            format!("{what}; removed {}", paths_list(&self.removed))
        } else if self.kept.is_empty() {
            what
        } else {
            format!(
                "{what}; kept {} (the name stays reserved: `ferryd user del {name} --purge` removes them, `ferryd user add {name} --adopt-home` reuses them)",
                paths_list(&self.kept)
            )
        }
    }
}

/// Removes an account. Its home directory and usage ledger are kept unless `purge` is set, so
/// that nothing is lost by a mistyped command; while they remain, the name cannot be
/// registered or added again without `--adopt-home`. With `purge`, also the remains of an
/// account deleted earlier are removed.
///
/// # Errors
/// [`AdminError::NoSuchUser`] when there was neither an account nor (with `purge`) remains,
/// [`AuthError::BadName`], or an I/O error.
pub fn user_del(config: &Config, name: &str, purge: bool) -> Result<Deleted, AdminError> {
    let user = UserName::parse(name)?;
    // The account first: from here on nobody can log in and write into the home.
    let database = wiring::tool_database(config)?;
    let account = match wiring::existing_accounts(config, database.as_ref())? {
        Some(store) => store.delete(&user)?,
        None => false,
    };
    let mut deleted = Deleted {
        account,
        removed: Vec::new(),
        kept: Vec::new(),
    };
    if purge {
        deleted
            .removed
            .extend(wiring::purge_bucket_home(config, &user)?);
        if let Some(db) = &database {
            deleted.removed.extend(wiring::purge_usage_row(db, &user)?);
        }
    }
    let left = wiring::remains(config, database.as_ref())?.of(&user)?;
    if !purge {
        deleted.kept = left;
    } else {
        for path in left {
            if path.starts_with("s3:") {
                // What the purge of the bucket left (written meanwhile, or keys ferryd does
                // not list): never a local path.
                return Err(AdminError::Io(io::Error::other(format!(
                    "objects remain under {} after the purge (written meanwhile, or keys \
                     ferryd does not list); remove them with an S3 client",
                    path.display()
                ))));
            }
            // Does not follow a symbolic link: a link itself is removed, not its target.
            if fs::symlink_metadata(&path)?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
            deleted.removed.push(path);
        }
    }
    if !deleted.account && deleted.removed.is_empty() {
        return Err(AdminError::NoSuchUser(name.to_owned()));
    }
    Ok(deleted)
}

/// Sets a new password for an existing account, hashed with `iterations` rounds.
///
/// # Errors
/// [`AdminError::NoSuchUser`], [`AuthError::BadName`], [`AuthError::WeakPassword`], or an I/O
/// error.
pub fn user_passwd(
    config: &Config,
    name: &str,
    password: &Password,
    iterations: u32,
) -> Result<(), AdminError> {
    let user = UserName::parse(name)?;
    check_password(password, config.min_password_length)?;
    let no_such_user = || AdminError::NoSuchUser(name.to_owned());
    let database = wiring::tool_database(config)?;
    let store = wiring::existing_accounts(config, database.as_ref())?.ok_or_else(no_such_user)?;
    let hash = hash_password(password, iterations)?;
    modify(&*store, &user, |record| {
        record.hash.clone_from(&hash);
        Ok(())
    })?
    .ok_or_else(no_such_user)?;
    Ok(())
}

/// Disables an account (it cannot log in; with a database, its live sessions on every node
/// end) or enables it again; its files stay.
///
/// # Errors
/// [`AdminError::NoSuchUser`], [`AuthError::BadName`], or an I/O error.
pub fn user_disable(config: &Config, name: &str, disabled: bool) -> Result<(), AdminError> {
    let user = UserName::parse(name)?;
    let no_such_user = || AdminError::NoSuchUser(name.to_owned());
    let database = wiring::tool_database(config)?;
    let store = wiring::existing_accounts(config, database.as_ref())?.ok_or_else(no_such_user)?;
    modify(&*store, &user, |record| {
        record.disabled = disabled;
        Ok(())
    })?
    .ok_or_else(no_such_user)?;
    Ok(())
}

/// All accounts as a table: name, created, disabled, read-only.
///
/// # Errors
/// A corrupt account file or an I/O error.
pub fn user_list(config: &Config) -> Result<String, AdminError> {
    let database = wiring::tool_database(config)?;
    let records = match wiring::existing_accounts(config, database.as_ref())? {
        Some(store) => store.list()?,
        None => Vec::new(),
    };
    let rows: Vec<_> = records
        .into_iter()
        .map(|r| {
            vec![
                r.name.as_str().cell(),
                r.created.cell(),
                if r.disabled { "yes" } else { "no" }.cell(),
                if r.read_only { "yes" } else { "no" }.cell(),
            ]
        })
        .collect();
    Ok(crate::table::render(
        &["name", "created", "disabled", "read-only"],
        rows,
    )?)
}

/// A change to an account's limits: `None` keeps a limit, `Some(None)` removes it,
/// `Some(Some(n))` sets it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaChange {
    /// New byte limit.
    pub bytes: Option<Option<u64>>,
    /// New file limit.
    pub files: Option<Option<u64>>,
}

/// The usage ledger, with limits from the account store.
fn ledger(
    config: &Config,
    accounts: Arc<dyn AccountStore>,
    database: Option<&Arc<Database>>,
) -> Result<QuotaLedger, AdminError> {
    Ok(wiring::quota_ledger(config, accounts, database)?)
}

/// `ferryd user quota`: applies `change` to the account's limits, recounts its usage from the
/// home directory when `recount` is set, and reports usage and limits as text.
///
/// # Errors
/// [`AdminError::NoSuchUser`], [`AuthError::BadName`], or an I/O error.
pub fn user_quota(
    config: &Config,
    name: &str,
    change: QuotaChange,
    recount: bool,
) -> Result<String, AdminError> {
    let user = UserName::parse(name)?;
    let no_such_user = || AdminError::NoSuchUser(name.to_owned());
    let database = wiring::tool_database(config)?;
    let store = wiring::existing_accounts(config, database.as_ref())?.ok_or_else(no_such_user)?;
    let record = if change.bytes.is_some() || change.files.is_some() {
        modify(&*store, &user, |record| {
            record.quota = Quota {
                bytes: change.bytes.unwrap_or(record.quota.bytes),
                files: change.files.unwrap_or(record.quota.files),
            };
            Ok(())
        })?
    } else {
        store.load(&user)?
    }
    .ok_or_else(no_such_user)?;
    let ledger = ledger(config, store, database.as_ref())?;
    let usage = if recount {
        ledger.recount(name)?
    } else {
        ledger.usage(name)?
    };
    let report = QuotaReport {
        usage,
        limits: record.quota,
    };
    let mut out = format!("{name}\n");
    for line in report.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// `ferryd invite create`: a new invitation code good for `uses` registrations.
///
/// # Errors
/// The code cannot be written.
pub fn invite_create(config: &Config, uses: u32) -> Result<Invite, AdminError> {
    let database = wiring::tool_database(config)?;
    Ok(wiring::invites(config, database.as_ref())?.create(uses)?)
}

/// `ferryd invite list`: every code with its uses left, as a table.
///
/// # Errors
/// The codes cannot be read.
pub fn invite_list(config: &Config) -> Result<String, AdminError> {
    let database = wiring::tool_database(config)?;
    let invites = if database.is_some() || config.invites_dir().is_dir() {
        wiring::invites(config, database.as_ref())?.list()?
    } else {
        Vec::new()
    };
    let rows: Vec<_> = invites
        .into_iter()
        .map(|i| vec![i.code.cell(), i.uses_left.cell(), i.created.cell()])
        .collect();
    Ok(crate::table::render(
        &["code", "uses left", "created"],
        rows,
    )?)
}

/// Which audit events [`log_table`] shows.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only events of this user.
    pub user: Option<String>,
    /// Only events of this kind.
    pub event: Option<EventKind>,
    /// Only the last N matching events.
    pub tail: Option<usize>,
    /// Only events of this node.
    pub node: Option<String>,
}

impl LogFilter {
    fn matches(&self, event: &Event) -> bool {
        self.user
            .as_deref()
            .is_none_or(|user| event.user.as_deref() == Some(user))
            && self.event.is_none_or(|kind| event.event == kind)
            && self
                .node
                .as_deref()
                .is_none_or(|node| event.node.as_deref() == Some(node))
    }
}

/// With `database_url`: the `audit_log` table of every node as [`log_table`] shows a file,
/// with a node column. Without a tail, a page of rows at a time (a table of its own each),
/// so a table of any size is shown without holding it all.
fn log_table_db(
    config: &Config,
    filter: &LogFilter,
    out: &mut dyn io::Write,
) -> Result<(), AdminError> {
    let db = Database::open_reader(config)?;
    let query = TableQuery {
        user: filter.user.clone(),
        kind: filter.event,
        node: filter.node.clone(),
        tail: filter.tail,
    };
    let mut skipped = 0;
    if query.tail.is_some() {
        let (events, bad) =
            crate::db::wait_here(async move { crate::audit::table::read(&db, query).await })?;
        writeln!(out, "{}", events_table(events, true)?)?;
        skipped = bad;
    } else {
        let mut after = None;
        let mut first = true;
        loop {
            let (db, query) = (Arc::clone(&db), query.clone());
            let page = crate::db::wait_here(async move {
                crate::audit::table::read_page(&db, &query, after).await
            })?;
            // An empty table still shows its header, as the file's does.
            if first || !page.events.is_empty() {
                writeln!(out, "{}", events_table(page.events, true)?)?;
            }
            first = false;
            skipped += page.skipped;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    if skipped > 0 {
        writeln!(
            out,
            "\n{skipped} record(s) of audit_log skipped: not valid audit events"
        )?;
    }
    Ok(())
}

/// The audit log (`log_dir/audit.jsonl` after its rotated files `audit.jsonl.N` ..
/// `audit.jsonl.1`, oldest first) as a table: time, session, peer, user, event, command or
/// path, bytes, code. Lines that do not parse are skipped and counted in a footer line. A
/// missing log reads as empty (the server has not run yet).
///
/// Written to `out`, a line after the table.
///
/// # Errors
/// The log cannot be read, or `out` written.
pub fn log_table(
    config: &Config,
    filter: &LogFilter,
    out: &mut dyn io::Write,
) -> Result<(), AdminError> {
    if config.database_url.is_some() {
        return log_table_db(config, filter, out);
    }
    let current = config.log_dir().join("audit.jsonl");
    let rotated = (1..=config.audit_keep).rev().map(|n| {
        let mut name = current.clone().into_os_string();
        name.push(format!(".{n}"));
        std::path::PathBuf::from(name)
    });
    let mut files = Vec::new();
    for path in rotated.chain([current.clone()]) {
        match File::open(&path) {
            Ok(file) => files.push(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Keep only what will be shown, so a long log is streamed rather than loaded.
    let keep = filter.tail.unwrap_or(usize::MAX);
    let mut shown: VecDeque<Event> = VecDeque::new();
    let mut skipped = 0usize;
    for file in files {
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Event>(&line) {
                Ok(event) if filter.matches(&event) => {
                    if keep == 0 {
                        continue;
                    }
                    if shown.len() == keep {
                        shown.pop_front();
                    }
                    shown.push_back(event);
                }
                Ok(_) => {}
                Err(_) => skipped += 1,
            }
        }
    }

    writeln!(out, "{}", events_table(shown, false)?)?;
    if skipped > 0 {
        writeln!(
            out,
            "\n{skipped} line(s) of {} (or its rotated files) skipped: not valid audit events",
            current.display()
        )?;
    }
    Ok(())
}

/// The table of [`log_table`], with a node column first when `with_node`.
fn events_table(
    events: impl IntoIterator<Item = Event>,
    with_node: bool,
) -> Result<String, AdminError> {
    let opt = |v: Option<String>| v.unwrap_or_default().cell();
    let rows: Vec<_> = events
        .into_iter()
        .map(|e| {
            let what = match (e.command, e.path, e.target) {
                (Some(command), _, _) => command,
                (None, Some(path), Some(target)) => format!("{path} -> {target}"),
                (None, Some(path), None) => path,
                (None, None, _) => String::new(),
            };
            let node = with_node.then(|| opt(e.node));
            node.into_iter()
                .chain([
                    e.time.cell(),
                    e.session.cell(),
                    e.peer.cell(),
                    opt(e.user),
                    e.event.as_str().cell(),
                    what.cell(),
                    opt(e.bytes.map(|b| b.to_string())),
                    opt(e.code.map(|c| c.to_string())),
                ])
                .collect::<Vec<_>>()
        })
        .collect();
    let node = with_node.then_some("node");
    let title: Vec<&str> = node
        .into_iter()
        .chain([
            "time",
            "session",
            "peer",
            "user",
            "event",
            "command/path",
            "bytes",
            "code",
        ])
        .collect();
    Ok(crate::table::render(&title, rows)?)
}

/// Reads a new password: from a terminal without echo, asked twice and required to match, or
/// (for scripts, `from_stdin`) as one line of standard input without its line ending.
///
/// # Errors
/// [`AdminError::PasswordMismatch`], [`AdminError::NoPassword`] at end of input,
/// [`AdminError::NoTerminal`] for a prompt without a terminal, or an I/O error.
pub fn read_password(prompt: &str, from_stdin: bool) -> Result<Password, AdminError> {
    if from_stdin {
        let mut line = String::new();
        if io::stdin().lock().read_line(&mut line)? == 0 {
            return Err(AdminError::NoPassword);
        }
        let secret = line.strip_suffix('\n').unwrap_or(&line);
        let secret = secret.strip_suffix('\r').unwrap_or(secret);
        return Ok(Password::new(secret));
    }
    // rpassword prompts on /dev/tty: without one (a script, cron, a pipe from a process
    // without a terminal) its error would only say "No such device or address".
    if fs::File::open("/dev/tty").is_err() {
        return Err(AdminError::NoTerminal);
    }
    let first = Password::new(rpassword::prompt_password(prompt)?);
    let second = Password::new(rpassword::prompt_password("Retype password: ")?);
    if first != second {
        return Err(AdminError::PasswordMismatch);
    }
    Ok(first)
}

pub mod live;

#[cfg(test)]
mod tests;
