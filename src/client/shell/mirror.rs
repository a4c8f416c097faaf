//! `mirror [-R] [--delete] [--dry-run] [--verify] [-P N] [--exclude GLOB]... SOURCE [TARGET]`:
//! makes TARGET a copy of the SOURCE tree, transferring only what is new or changed. Without
//! `-R` the source is remote (as lftp's `mirror`); with it, local.
//!
//! A file is up to date when the sizes match and the times agree within what the listing
//! tells (MLSD to the second, LIST to the minute or the day; MDTM where a day is all it says
//! and the sizes match). A target file shorter than its
//! source and written after the source last changed is the rest of an interrupted copy: it is
//! resumed. Copies get their source's time (the local file's on download; MFMT on upload where
//! the server has it). An upload whose server cannot take the time leaves the copy newer than
//! its source, which counts as up to date: only a source newer than its copy is sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use jiff::Timestamp;

use crate::client::entries::{self, EntryKind, Modified};
use crate::client::ftp::{ClientError, FtpClient};
use crate::client::render;

use super::batch::{self, Direction, Job, Settings};
use super::transfer::absolute;
use super::{Shell, ShellError, base_name};

const USAGE: &str =
    "mirror [-R] [--delete] [--dry-run] [--verify] [-P N] [--exclude GLOB]... SOURCE [TARGET]";
/// Deepest directory level walked: a server that lists a loop of directories must not walk
/// forever.
const MAX_DEPTH: usize = 64;
/// Most entries in one tree, for the same reason.
const MAX_ENTRIES: usize = 1_000_000;

/// A file of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    size: Option<u64>,
    modified: Option<Modified>,
}

/// A tree by paths relative to its root (`a/b.txt`).
#[derive(Debug, Default)]
struct Tree {
    exists: bool,
    files: BTreeMap<String, Node>,
    dirs: BTreeSet<String>,
    /// Links and other entries that are neither file nor directory, left alone.
    skipped: usize,
}

/// What mirror does to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Copy a file: `why` is `new`, `changed` or `partial` (resumed).
    Copy {
        rel: String,
        resume: bool,
        why: &'static str,
    },
    /// Create a directory on the target side.
    MakeDir(String),
    /// Delete a target file that the source does not have (`--delete`).
    Delete(String),
    /// Remove a target directory that the source does not have (`--delete`).
    RemoveDir(String),
    /// A file on one side is a directory on the other: left as it is.
    Conflict(String),
}

/// The steps, in the order they are taken: directories, copies, deletions (deepest first).
#[derive(Debug, Default)]
struct Plan {
    steps: Vec<Step>,
    up_to_date: usize,
}

/// The options of one `mirror` command.
struct Request<'a> {
    upload: bool,
    delete: bool,
    dry_run: bool,
    excludes: Vec<glob::Pattern>,
    settings: Settings,
    source: &'a str,
    target: Option<&'a str>,
}

impl Shell {
    pub(super) fn mirror(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let request = self.mirror_request(args)?;
        let cwd = self.client()?.pwd()?;
        let (remote_root, local_root) = if request.upload {
            let local = request.source.trim_end_matches('/');
            let remote = request
                .target
                .map_or_else(|| name_of(local).to_owned(), str::to_owned);
            (absolute(&cwd, &remote), PathBuf::from(local))
        } else {
            let remote = absolute(&cwd, request.source);
            let local = request
                .target
                .map_or_else(|| name_of(&remote).to_owned(), str::to_owned);
            (remote, PathBuf::from(local))
        };
        let remote_root = match remote_root.trim_end_matches('/') {
            "" => "/".to_owned(),
            root => root.to_owned(),
        };
        let abort = self.reset_abort();
        let remote = remote_tree(
            self.client()?,
            &remote_root,
            &cwd,
            &request.excludes,
            &abort,
        )?;
        let local = local_tree(&local_root, &request.excludes)?;
        let mut remote = remote;
        refine_times(self.client()?, &remote_root, &mut remote, &local)?;
        let (source, target) = if request.upload {
            (&local, &remote)
        } else {
            (&remote, &local)
        };
        if !source.exists {
            return Err(ShellError::Message(format!(
                "mirror: {} does not exist",
                request.source
            )));
        }
        let plan = plan(source, target, request.upload, request.delete);
        let remote_path = |rel: &str| join_remote(&remote_root, rel);
        let local_path = |rel: &str| local_root.join(rel);

        if request.dry_run {
            for step in &plan.steps {
                let line = match step {
                    Step::Copy { rel, why, .. } => {
                        let size = source.files.get(rel).and_then(|n| n.size);
                        let size = size.map_or_else(String::new, |s| format!(", {s} bytes"));
                        let verb = if request.upload { "put" } else { "get" };
                        format!("{verb} {rel} ({why}{size})")
                    }
                    Step::MakeDir(rel) => format!("mkdir {rel}"),
                    Step::Delete(rel) => format!("rm {rel}"),
                    Step::RemoveDir(rel) => format!("rmdir {rel}"),
                    Step::Conflict(rel) => {
                        format!("skip {rel} (a file on one side, a directory on the other)")
                    }
                };
                println!("{line}");
            }
            let copies = plan
                .steps
                .iter()
                .filter(|s| matches!(s, Step::Copy { .. }))
                .count();
            println!(
                "mirror --dry-run: {copies} to copy, {} up to date, {} to delete; nothing was changed",
                plan.up_to_date,
                plan.steps
                    .iter()
                    .filter(|s| matches!(s, Step::Delete(_) | Step::RemoveDir(_)))
                    .count()
            );
            return Ok(());
        }

        let started = Instant::now();
        let mut failed = 0;
        let mut note = |what: String, e: &dyn std::fmt::Display| {
            eprintln!("ferry: {what}: {e}");
            failed += 1;
        };
        // The target's root, then its directories, parents first (the plan's order).
        if !target.exists {
            let made = if request.upload {
                self.remote_mkdir(&remote_root, &cwd)
            } else {
                fs::create_dir_all(&local_root).map_err(|e| local_error(&local_root, e))
            };
            made?;
        }
        let mut jobs = Vec::new();
        for step in &plan.steps {
            match step {
                Step::MakeDir(rel) => {
                    let made = if request.upload {
                        self.remote_mkdir(&remote_path(rel), &cwd)
                    } else {
                        fs::create_dir_all(local_path(rel))
                            .map_err(|e| local_error(&local_path(rel), e))
                    };
                    if let Err(e) = made {
                        note(format!("mkdir {rel}"), &e);
                    }
                }
                Step::Copy { rel, resume, .. } => {
                    let node = source.files.get(rel).copied().unwrap_or(Node {
                        size: None,
                        modified: None,
                    });
                    jobs.push(Job {
                        direction: if request.upload {
                            Direction::Put
                        } else {
                            Direction::Get
                        },
                        remote: remote_path(rel),
                        local: local_path(rel),
                        size: node.size,
                        modified: node.modified.map(Modified::representative),
                        // A LIST time is to the minute at best: the copy gets MDTM's.
                        ask_time: !request.upload
                            && !matches!(node.modified, Some(Modified::At(_))),
                        resume: *resume,
                        label: rel.clone(),
                    });
                }
                Step::Conflict(rel) => note(
                    rel.clone(),
                    &"a file on one side and a directory on the other; left as it is",
                ),
                Step::Delete(_) | Step::RemoveDir(_) => {}
            }
        }
        let copies = jobs.len();
        let report = if jobs.is_empty() {
            batch::Report::default()
        } else {
            batch::run(&self.login_again()?, jobs, request.settings, &abort)
        };
        if abort.load(Ordering::Relaxed) {
            return Err(ClientError::Aborted.into());
        }
        let mut deleted = 0;
        // Nothing is deleted when a copy failed: the target may still need what it has.
        if report.failed.is_empty() {
            for step in &plan.steps {
                let done = match step {
                    Step::Delete(rel) if request.upload => self
                        .remote_ok(&format!("DELE {}", remote_path(rel)))
                        .map(|()| rel),
                    Step::RemoveDir(rel) if request.upload => self
                        .remote_ok(&format!("RMD {}", remote_path(rel)))
                        .map(|()| rel),
                    Step::Delete(rel) => fs::remove_file(local_path(rel))
                        .map(|()| rel)
                        .map_err(|e| local_error(&local_path(rel), e)),
                    Step::RemoveDir(rel) => fs::remove_dir(local_path(rel))
                        .map(|()| rel)
                        .map_err(|e| local_error(&local_path(rel), e)),
                    _ => continue,
                };
                match done {
                    Ok(_) => deleted += 1,
                    Err(e) => note(format!("delete {}", step_path(step)), &e),
                }
            }
        }
        let failed = failed + report.failed.len();
        let copied = if copies == 0 {
            "nothing to copy".to_owned()
        } else {
            format!(
                "{} of {copies} files copied, {}",
                report.done,
                render::summary(report.bytes, started.elapsed())
            )
        };
        self.say(format_args!(
            "mirror: {copied}; {} up to date, {deleted} deleted, {failed} failed",
            plan.up_to_date,
        ));
        if failed > 0 {
            return Err(ShellError::Partial {
                failed,
                total: copies.max(failed),
            });
        }
        Ok(())
    }

    fn mirror_request<'a>(&self, args: &[&'a str]) -> Result<Request<'a>, ShellError> {
        let mut upload = false;
        let mut delete = false;
        let mut dry_run = false;
        let mut excludes = Vec::new();
        let mut rest = Vec::new();
        let mut words = args.iter();
        while let Some(word) = words.next() {
            match *word {
                "-R" | "--reverse" => upload = true,
                "--delete" => delete = true,
                "--dry-run" => dry_run = true,
                "--exclude" | "-X" => {
                    let glob = words.next().ok_or(ShellError::Usage(USAGE))?;
                    excludes.push(
                        glob::Pattern::new(glob)
                            .map_err(|e| ShellError::Message(format!("--exclude {glob}: {e}")))?,
                    );
                }
                word => rest.push(word),
            }
        }
        let (settings, operands) = self.batch_options(&rest, USAGE)?;
        let (source, target) = match operands.as_slice() {
            [source] => (*source, None),
            [source, target] => (*source, Some(*target)),
            _ => return Err(ShellError::Usage(USAGE)),
        };
        Ok(Request {
            upload,
            delete,
            dry_run,
            excludes,
            settings,
            source,
            target,
        })
    }

    /// MKD, where a directory that is already there is no failure; `back` is the directory
    /// to return to after looking.
    fn remote_mkdir(&mut self, path: &str, back: &str) -> Result<(), ShellError> {
        let client = self.client()?;
        let reply = client.command(&format!("MKD {path}"))?;
        if reply.is_success() {
            return Ok(());
        }
        if client.ok(&format!("CWD {path}")).is_ok() {
            client.ok(&format!("CWD {back}"))?;
            return Ok(());
        }
        Err(ShellError::about(format!("cannot create {path}"))(
            ClientError::Refused(reply),
        ))
    }

    fn remote_ok(&mut self, line: &str) -> Result<(), ShellError> {
        self.client()?.ok(line)?;
        Ok(())
    }
}

fn step_path(step: &Step) -> &str {
    match step {
        Step::Copy { rel, .. }
        | Step::MakeDir(rel)
        | Step::Delete(rel)
        | Step::RemoveDir(rel)
        | Step::Conflict(rel) => rel,
    }
}

fn local_error(path: &Path, source: io::Error) -> ShellError {
    ClientError::Local {
        path: path.display().to_string(),
        source,
    }
    .into()
}

/// The default target: the source's own name (`.` for a root).
fn name_of(path: &str) -> &str {
    match base_name(path) {
        "" | "/" => ".",
        name => name,
    }
}

fn join_remote(root: &str, rel: &str) -> String {
    if root.ends_with('/') {
        format!("{root}{rel}")
    } else {
        format!("{root}/{rel}")
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn excluded(excludes: &[glob::Pattern], rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    excludes.iter().any(|p| p.matches(rel) || p.matches(name))
}

fn too_big() -> ShellError {
    ShellError::Message(format!(
        "mirror: more than {MAX_ENTRIES} entries or {MAX_DEPTH} levels; not walked further"
    ))
}

/// The remote tree below `root`, walked with MLSD (or LIST) one directory at a time; `back`
/// is the directory to return to after looking whether an empty root is there at all.
fn remote_tree(
    client: &mut FtpClient,
    root: &str,
    back: &str,
    excludes: &[glob::Pattern],
    abort: &AtomicBool,
) -> Result<Tree, ShellError> {
    let mut tree = Tree::default();
    let mut pending = vec![(String::new(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        let path = if dir.is_empty() {
            root.to_owned()
        } else {
            join_remote(root, &dir)
        };
        let entries = match client.list(Some(&path), abort) {
            Ok(entries) => entries,
            // A missing root is an empty target (or a missing source, said by the caller);
            // pyftpdlib refuses MLSD of a missing directory with 501.
            Err(ClientError::Refused(reply))
                if dir.is_empty() && matches!(reply.code, 450 | 501 | 550) =>
            {
                return Ok(tree);
            }
            Err(e) => return Err(ShellError::about(format!("cannot list {path}"))(e)),
        };
        // vsftpd lists a missing directory as an empty one: an empty root may not be there.
        if dir.is_empty() && entries.is_empty() {
            if client.ok(&format!("CWD {root}")).is_err() {
                return Ok(tree);
            }
            client.ok(&format!("CWD {back}"))?;
        }
        tree.exists = true;
        for entry in entries {
            if !entries::is_plain_name(&entry.name) {
                continue;
            }
            let rel = join_rel(&dir, &entry.name);
            if excluded(excludes, &rel) {
                continue;
            }
            if tree.files.len() + tree.dirs.len() >= MAX_ENTRIES {
                return Err(too_big());
            }
            match entry.kind {
                EntryKind::Dir => {
                    if depth + 1 >= MAX_DEPTH {
                        return Err(too_big());
                    }
                    tree.dirs.insert(rel.clone());
                    pending.push((rel, depth + 1));
                }
                EntryKind::File => {
                    tree.files.insert(
                        rel,
                        Node {
                            size: entry.size,
                            modified: entry.modified,
                        },
                    );
                }
                EntryKind::Link | EntryKind::Other => tree.skipped += 1,
            }
        }
    }
    Ok(tree)
}

/// MDTM (RFC 3659 §3) of the remote files whose listing gave only a day, or no time, and
/// whose size matches the local file's: only a time tells whether they are the same. A server
/// without MDTM is asked once.
fn refine_times(
    client: &mut FtpClient,
    root: &str,
    remote: &mut Tree,
    local: &Tree,
) -> Result<(), ShellError> {
    for (rel, node) in &mut remote.files {
        let vague = matches!(node.modified, None | Some(Modified::Day(_)));
        let same_size = local.files.get(rel).is_some_and(|l| l.size == node.size);
        if !(vague && same_size) {
            continue;
        }
        match mdtm(client, &join_remote(root, rel))? {
            Some(Some(at)) => node.modified = Some(at),
            Some(None) => {}
            None => break,
        }
    }
    Ok(())
}

/// MDTM of one file: `Some(time)`, `Some(None)` when it has none, `None` when the server
/// does not know the command.
pub(super) fn mdtm(
    client: &mut FtpClient,
    path: &str,
) -> Result<Option<Option<Modified>>, ClientError> {
    let reply = client.command(&format!("MDTM {path}"))?;
    Ok(match reply.code {
        213 => Some(entries::parse_timeval(reply.text().trim())),
        421 => return Err(ClientError::Refused(reply)),
        500 | 502 => None,
        _ => Some(None),
    })
}

/// The local tree below `root`. Links to files count as files; links to directories are not
/// followed (they may loop).
fn local_tree(root: &Path, excludes: &[glob::Pattern]) -> Result<Tree, ShellError> {
    let mut tree = Tree::default();
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => tree.exists = true,
        Ok(_) => {
            return Err(ShellError::Message(format!(
                "mirror: {} is not a directory",
                root.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(tree),
        Err(e) => return Err(local_error(root, e)),
    }
    let mut pending = vec![(String::new(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        let path = root.join(&dir);
        for dirent in fs::read_dir(&path).map_err(|e| local_error(&path, e))? {
            let dirent = dirent.map_err(|e| local_error(&path, e))?;
            let Some(name) = dirent.file_name().to_str().map(str::to_owned) else {
                tree.skipped += 1;
                continue;
            };
            let rel = join_rel(&dir, &name);
            if excluded(excludes, &rel) {
                continue;
            }
            if tree.files.len() + tree.dirs.len() >= MAX_ENTRIES {
                return Err(too_big());
            }
            let kind = dirent.file_type().map_err(|e| local_error(&path, e))?;
            if kind.is_dir() {
                if depth + 1 >= MAX_DEPTH {
                    return Err(too_big());
                }
                tree.dirs.insert(rel.clone());
                pending.push((rel, depth + 1));
                continue;
            }
            match fs::metadata(dirent.path()) {
                Ok(meta) if meta.is_file() => {
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| Timestamp::try_from(t).ok())
                        .map(Modified::At);
                    tree.files.insert(
                        rel,
                        Node {
                            size: Some(meta.len()),
                            modified,
                        },
                    );
                }
                _ => tree.skipped += 1,
            }
        }
    }
    Ok(tree)
}

/// What to do to make `target` a copy of `source`.
fn plan(source: &Tree, target: &Tree, upload: bool, delete: bool) -> Plan {
    let mut plan = Plan::default();
    for dir in &source.dirs {
        if target.files.contains_key(dir) {
            plan.steps.push(Step::Conflict(dir.clone()));
        } else if !target.dirs.contains(dir) {
            plan.steps.push(Step::MakeDir(dir.clone()));
        }
    }
    for (rel, node) in &source.files {
        if target.dirs.contains(rel) {
            plan.steps.push(Step::Conflict(rel.clone()));
            continue;
        }
        let step = match target.files.get(rel) {
            None => Some((false, "new")),
            Some(copy) => compare(node, copy, upload),
        };
        match step {
            Some((resume, why)) => plan.steps.push(Step::Copy {
                rel: rel.clone(),
                resume,
                why,
            }),
            None => plan.up_to_date += 1,
        }
    }
    if delete {
        for rel in target.files.keys() {
            if !source.files.contains_key(rel) && !source.dirs.contains(rel) {
                plan.steps.push(Step::Delete(rel.clone()));
            }
        }
        // Deepest first: a directory's contents go before it.
        for rel in target.dirs.iter().rev() {
            if !source.dirs.contains(rel) && !source.files.contains_key(rel) {
                plan.steps.push(Step::RemoveDir(rel.clone()));
            }
        }
    }
    plan
}

/// Whether `copy` needs `source` again: `None` when up to date, else whether to resume and
/// why.
fn compare(source: &Node, copy: &Node, upload: bool) -> Option<(bool, &'static str)> {
    // The remote side's time is the one with a precision (a window); the local one is exact.
    let (remote, local) = if upload {
        (copy.modified, source.modified)
    } else {
        (source.modified, copy.modified)
    };
    let local = local.map(Modified::representative);
    let order = remote
        .zip(local)
        .map(|(remote, local)| remote.compare(local));
    // Less: the local file is older than the remote one; Greater: newer.
    let copy_is_newer = order.is_some_and(|o| {
        if upload {
            o == std::cmp::Ordering::Less
        } else {
            o == std::cmp::Ordering::Greater
        }
    });
    match (source.size, copy.size) {
        (Some(s), Some(c)) if c < s && copy_is_newer => return Some((true, "partial")),
        (Some(s), Some(c)) if c != s => return Some((false, "changed")),
        _ => {}
    }
    let changed = match order {
        None => false,
        // A download sets the copy's time to the source's: any other time is a change.
        Some(o) if !upload => o != std::cmp::Ordering::Equal,
        // An upload's copy may keep its arrival time: only a newer source is a change.
        Some(o) => o == std::cmp::Ordering::Greater,
    };
    changed.then_some((false, "changed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_780_000_000 + secs).expect("time")
    }

    fn node(size: u64, modified: Option<Modified>) -> Node {
        Node {
            size: Some(size),
            modified,
        }
    }

    #[test]
    fn downloads_copy_what_is_new_changed_or_partial() {
        let remote = node(100, Some(Modified::At(at(0))));
        // The copy ferry made: same size, same time.
        assert_eq!(
            compare(&remote, &node(100, Some(Modified::At(at(0)))), false),
            None
        );
        // Edited here since: the mirror puts the source's version back.
        assert_eq!(
            compare(&remote, &node(100, Some(Modified::At(at(500)))), false),
            Some((false, "changed"))
        );
        // Shorter and written after the source changed: the rest of an interrupted copy.
        assert_eq!(
            compare(&remote, &node(40, Some(Modified::At(at(30)))), false),
            Some((true, "partial"))
        );
        // Shorter but older than the source: the source changed, copied whole.
        assert_eq!(
            compare(&remote, &node(40, Some(Modified::At(at(-30)))), false),
            Some((false, "changed"))
        );
        // LIST's minute: a copy within that minute is the same time.
        let listed = node(100, Some(Modified::Minute(at(0))));
        assert_eq!(
            compare(&listed, &node(100, Some(Modified::At(at(42)))), false),
            None
        );
    }

    #[test]
    fn uploads_without_mfmt_are_not_sent_again() {
        let local = node(100, Some(Modified::At(at(0))));
        // The server kept the arrival time (no MFMT): newer than the source, up to date.
        assert_eq!(
            compare(&local, &node(100, Some(Modified::At(at(90)))), true),
            None
        );
        // The source changed after the upload.
        assert_eq!(
            compare(&local, &node(100, Some(Modified::Minute(at(-600)))), true),
            Some((false, "changed"))
        );
        // A partial upload, newer than the source: resumed.
        assert_eq!(
            compare(&local, &node(10, Some(Modified::At(at(60)))), true),
            Some((true, "partial"))
        );
        assert_eq!(
            compare(&local, &node(10, None), true),
            Some((false, "changed"))
        );
    }

    #[test]
    fn plans_make_directories_first_and_delete_deepest_first() {
        let mut source = Tree {
            exists: true,
            ..Tree::default()
        };
        source.dirs.extend(["a".to_owned(), "a/b".to_owned()]);
        source.files.insert("a/b/f".into(), node(1, None));
        source.files.insert("same".into(), node(2, None));
        let mut target = Tree {
            exists: true,
            ..Tree::default()
        };
        target.files.insert("same".into(), node(2, None));
        target
            .dirs
            .extend(["old".to_owned(), "old/deeper".to_owned()]);
        target.files.insert("old/deeper/x".into(), node(3, None));
        let plan = plan(&source, &target, false, true);
        assert_eq!(
            plan.steps,
            vec![
                Step::MakeDir("a".into()),
                Step::MakeDir("a/b".into()),
                Step::Copy {
                    rel: "a/b/f".into(),
                    resume: false,
                    why: "new"
                },
                Step::Delete("old/deeper/x".into()),
                Step::RemoveDir("old/deeper".into()),
                Step::RemoveDir("old".into()),
            ]
        );
        assert_eq!(plan.up_to_date, 1);
    }

    #[test]
    fn excludes_match_names_and_paths() {
        let excludes = vec![
            glob::Pattern::new("*.tmp").expect("glob"),
            glob::Pattern::new("cache").expect("glob"),
        ];
        assert!(excluded(&excludes, "a/b/x.tmp"));
        assert!(excluded(&excludes, "deep/cache"));
        assert!(!excluded(&excludes, "a/keep.txt"));
    }
}
