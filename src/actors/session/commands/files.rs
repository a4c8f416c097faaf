//! Navigation, file actions and facts of one file: CWD, MKD, RMD, DELE, RNFR/RNTO, SIZE,
//! MDTM, MFMT, HASH (RFC 959 §4.1.1, §4.1.3; RFC 3659 §3, §4).

use std::time::SystemTime;

use actix::prelude::*;

use super::Next;
use crate::actors::Services;
use crate::actors::audit_log::EventKind;
use crate::actors::file_store::{Hash, Mkdir, Remove, Rename, Rmdir, SetModified, Stat};
use crate::actors::session::Session;
use crate::actors::session::replies::{self, Unsupported};
use crate::codec::entry::{FileInfo, FileKind};
use crate::codec::listing;
use crate::codec::{Reply, ReplyCode};
use crate::storage::vpath::VPath;

impl Session {
    pub(super) fn cwd(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        self.on_path(ctx, text, arg, stat, |act, info: FileInfo, path| {
            Next::Reply(if info.kind == FileKind::Dir {
                act.settings.cwd = path;
                Reply::new(ReplyCode::FileActionOk, "Directory successfully changed.")
            } else {
                Reply::new(ReplyCode::FileUnavailable, "Not a directory.")
            })
        });
    }

    pub(super) fn mkd(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let mkdir = |s: &Services, user, path| s.mkdir.send(Mkdir { user, path });
        self.on_path(ctx, text, arg, mkdir, |act, (), path| {
            act.audit_file_event(EventKind::Mkdir, &path, None);
            Next::Reply(Reply::path(path.as_str(), "created."))
        });
    }

    pub(super) fn rmd(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let rmdir = |s: &Services, user, path| s.rmdir.send(Rmdir { user, path });
        self.on_path(ctx, text, arg, rmdir, |act, (), path| {
            act.audit_file_event(EventKind::Rmdir, &path, None);
            Next::Reply(Reply::new(ReplyCode::FileActionOk, "Directory removed."))
        });
    }

    pub(super) fn dele(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let remove = |s: &Services, user, path| s.remove.send(Remove { user, path });
        self.on_path(ctx, text, arg, remove, |act, (), path| {
            act.audit_file_event(EventKind::Delete, &path, None);
            Next::Reply(Reply::new(ReplyCode::FileActionOk, "File deleted."))
        });
    }

    pub(super) fn rnfr(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        self.on_path(ctx, text, arg, stat, |act, info: FileInfo, path| {
            Next::Reply(if path.is_root() {
                Reply::new(
                    ReplyCode::FileUnavailable,
                    "Cannot rename the home directory.",
                )
            } else if info.kind == FileKind::Dir && !act.env.capabilities.rename_dirs {
                replies::unsupported(Unsupported::RenameDir)
            } else {
                act.settings.rename_from = Some(path);
                Reply::new(ReplyCode::PendingFurtherInfo, "Ready for RNTO.")
            })
        });
    }

    pub(super) fn rnto(
        &mut self,
        text: String,
        arg: &str,
        from: Option<VPath>,
        ctx: &mut Context<Self>,
    ) {
        let Some(from) = from else {
            self.finish(
                &text,
                Reply::new(ReplyCode::BadSequence, "RNFR required first."),
            );
            return;
        };
        let source = from.clone();
        let rename = move |s: &Services, user, to| s.rename.send(Rename { user, from, to });
        self.on_path(ctx, text, arg, rename, move |act, (), to| {
            act.audit_file_event(EventKind::Rename, &source, Some(&to));
            Next::Reply(Reply::new(ReplyCode::FileActionOk, "Rename successful."))
        });
    }

    pub(super) fn size(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        if self.settings.ascii {
            // RFC 3659 §4: in ASCII type the size must be that of the converted stream; a wrong
            // number is worse than none, so refuse (as ProFTPD does).
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::FileUnavailable,
                    "SIZE not allowed in ASCII mode.",
                ),
            );
            return;
        }
        self.stat_file(text, arg, ctx, |info| info.size.to_string());
    }

    pub(super) fn mdtm(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        self.stat_file(text, arg, ctx, |info| listing::timeval(info.modified));
    }

    /// SIZE and MDTM: 213 with one fact of a regular file.
    pub(super) fn stat_file(
        &mut self,
        text: String,
        arg: &str,
        ctx: &mut Context<Self>,
        fact: fn(&FileInfo) -> String,
    ) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        self.on_path(ctx, text, arg, stat, move |_, info: FileInfo, _| {
            Next::Reply(if info.kind == FileKind::File {
                Reply::new(ReplyCode::FileStatus, fact(&info))
            } else {
                Reply::new(ReplyCode::FileUnavailable, "Not a plain file.")
            })
        });
    }

    /// MFMT (draft-somers-ftp-mfxx): set a file's modification time; 213 echoes it.
    pub(super) fn mfmt(
        &mut self,
        text: String,
        arg: &str,
        time: SystemTime,
        ctx: &mut Context<Self>,
    ) {
        if !self.env.capabilities.set_mtime {
            self.finish(&text, replies::unsupported(Unsupported::SetMtime));
            return;
        }
        let set =
            move |s: &Services, user, path| s.set_modified.send(SetModified { user, path, time });
        self.on_path(ctx, text, arg, set, move |_, (), path| {
            Next::Reply(Reply::new(
                ReplyCode::FileStatus,
                format!("Modify={}; {path}", listing::timeval(time)),
            ))
        });
    }

    /// HASH (draft-bryan-ftpext-hash §3.3): `213 <algo> <start>-<end> <hash> <path>`.
    pub(super) fn hash(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let algo = self.settings.hash_algo;
        let hash = move |s: &Services, user, path| s.hash.send(Hash { user, path, algo });
        self.on_path(
            ctx,
            text,
            arg,
            hash,
            move |_, (digest, size): (String, u64), path| {
                Next::Reply(Reply::new(
                    ReplyCode::FileStatus,
                    format!("{} 0-{size} {digest} {path}", algo.name()),
                ))
            },
        );
    }
}
