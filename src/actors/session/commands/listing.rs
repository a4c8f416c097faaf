//! Listings: LIST, NLST, MLSD over a data connection, streamed a page of entries at a time
//! (a page is formatted once the previous one is written); MLST and STAT on the control
//! connection (RFC 959, RFC 3659 §7).

use std::time::SystemTime;

use actix::prelude::*;
use futures::{StreamExt as _, TryStreamExt as _};

use super::{ListingStyle, Next};
use crate::actors::Services;
use crate::actors::file_store::{List, ListPages, Stat};
use crate::actors::session::{Session, TransferKind};
use crate::codec::entry::FileInfo;
use crate::codec::listing::{self, Role};
use crate::codec::{Reply, ReplyCode, reply};
use crate::storage::{Listing, ListingPages, Pages};
use crate::transfer::{Job, Pieces};

/// Lines of a `STAT <dir>` reply queued at a time (about 25 KiB).
const STATUS_PIECE: usize = 256;

/// NLST's name of each entry, as the client can name it back: joined to the argument as
/// given, so `NLST dir` yields `dir/a` and `NLST dir/*.dat` yields `dir/a.dat` (what vsftpd
/// sends, and what `mget` and `for n in nlst("dir"): RETR n` rely on); bare names with no
/// argument; the argument itself for a file.
fn name_as_given(
    given: &str,
    is_dir: bool,
    matched: bool,
) -> impl Fn(&FileInfo) -> String + Send + 'static {
    let prefix = if given.is_empty() {
        Some(String::new())
    } else if is_dir {
        Some(format!("{}/", given.trim_end_matches('/')))
    } else if matched {
        Some(
            given
                .rsplit_once('/')
                .map_or_else(String::new, |(dir, _)| format!("{dir}/")),
        )
    } else {
        None
    };
    let given = given.to_owned();
    move |entry| {
        let name = match &prefix {
            Some(prefix) => format!("{prefix}{}", entry.name),
            None => given.clone(),
        };
        listing::display_name(&name).into_owned()
    }
}

/// A listing's text as the data connection sends it: `head`, then the lines of each page,
/// formatted only when the transfer asks for that page.
fn pieces(
    head: Vec<u8>,
    pages: Pages,
    line: impl Fn(&FileInfo) -> String + Send + 'static,
) -> Pieces {
    let head = futures::stream::once(std::future::ready(Ok(head)));
    let lines = pages.map_ok(move |page| listing::to_wire(page.iter().map(&line)));
    Box::pin(head.chain(lines))
}

impl Session {
    pub(super) fn mlst(&mut self, text: String, arg: Option<String>, ctx: &mut Context<Self>) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        let arg = arg.unwrap_or_default();
        self.on_path(ctx, text, &arg, stat, |act, mut info: FileInfo, path| {
            // RFC 3659 §7.2: the fact line names the object by its full pathname.
            info.name = path.to_string();
            let line = listing::mlsx_line(&info, act.settings.facts, Role::Entry, act.writable());
            Next::Reply(Reply::multi(
                ReplyCode::FileActionOk,
                vec![
                    format!("Listing {path}"),
                    format!(" {line}"),
                    "End".to_owned(),
                ],
            ))
        });
    }

    pub(super) fn stat_path(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let list = |s: &Services, user, path| {
            s.list.send(List {
                user,
                path,
                expand: false,
            })
        };
        self.on_path(ctx, text, arg, list, |act, found: Listing, path| {
            let first = format!("Status of {path}:");
            act.control
                .send_piece(|out| reply::encode_first(ReplyCode::FileStatus, &first, out));
            Next::Status(found.entries)
        });
    }

    /// Queues the STAT lines of `entries[from..]` a piece at a time, each piece once the
    /// client has read the previous ones, so the pending replies stay under the writer's bound
    /// however big the directory. Nothing else is sent meanwhile (`after_drain` holds the
    /// context), so the multi-line reply stays whole.
    pub(super) fn stream_status(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        entries: Vec<FileInfo>,
        from: usize,
        now: SystemTime,
    ) {
        let end = entries.len().min(from.saturating_add(STATUS_PIECE));
        let piece = entries.get(from..end).unwrap_or_default();
        self.control.send_piece(|out| {
            for entry in piece {
                reply::encode_middle(&listing::list_line(entry, now), out);
            }
        });
        if end < entries.len() {
            self.after_drain(ctx, move |act, ctx| {
                act.stream_status(ctx, text, entries, end, now);
            });
            return;
        }
        self.control
            .send_piece(|out| reply::encode_last(ReplyCode::FileStatus, "End of status.", out));
        self.record_command(&text, ReplyCode::FileStatus);
    }

    pub(super) fn server_status(&mut self, text: &str) {
        let mut lines = vec![
            "ferry FTP server status:".to_owned(),
            format!("Connected from {}", self.peer),
        ];
        match self.state.logged_in() {
            Some(l) => lines.push(format!("Logged in as {}", l.user)),
            None => lines.push("Not logged in".to_owned()),
        }
        lines.push(format!(
            "TYPE: {}, STRUcture: File, MODE: Stream",
            if self.settings.ascii {
                "ASCII"
            } else {
                "BINARY"
            }
        ));
        match &self.transfer {
            Some(running) => lines.push(format!(
                "Transfer in progress: {} bytes so far",
                running.progress.load(std::sync::atomic::Ordering::Relaxed)
            )),
            None if self.settings.data.is_some() => {
                lines.push("Data connection prepared".to_owned());
            }
            None => lines.push("No data connection".to_owned()),
        }
        lines.push("End of status".to_owned());
        self.finish(text, Reply::multi(ReplyCode::SystemStatus, lines));
    }

    pub(super) fn listing(
        &mut self,
        text: String,
        arg: Option<String>,
        style: ListingStyle,
        ctx: &mut Context<Self>,
    ) {
        if !self.need_data(&text) {
            return;
        }
        // MLSD names a directory (RFC 3659 §7.1); wildcard patterns are for LIST and NLST.
        let expand = !matches!(style, ListingStyle::Facts);
        let list =
            move |s: &Services, user, path| s.list_pages.send(ListPages { user, path, expand });
        let arg = arg.unwrap_or_default();
        let given = arg.clone();
        self.on_path(
            ctx,
            text,
            &arg,
            list,
            move |act, found: ListingPages, path| {
                if matches!(style, ListingStyle::Facts) && !found.is_dir {
                    // RFC 3659 §7.2.2: MLSD of something that is not a directory is an error.
                    return Next::Reply(Reply::new(
                        ReplyCode::BadArguments,
                        format!("{path} is not a directory."),
                    ));
                }
                let now = SystemTime::now();
                let facts = act.settings.facts;
                let writable = act.writable();
                let ListingPages {
                    is_dir,
                    matched,
                    this,
                    parent,
                    pages,
                    ..
                } = found;
                let pieces =
                    match style {
                        ListingStyle::Long => {
                            pieces(Vec::new(), pages, move |e| listing::list_line(e, now))
                        }
                        ListingStyle::Names => {
                            pieces(Vec::new(), pages, name_as_given(&given, is_dir, matched))
                        }
                        // RFC 3659 §7.5.1: the listed directory (cdir) and its parent (pdir) first.
                        ListingStyle::Facts => {
                            let this = this.iter();
                            let head =
                                this.map(|d| listing::mlsx_line(d, facts, Role::Current, writable))
                                    .chain(parent.iter().map(|p| {
                                        listing::mlsx_line(p, facts, Role::Parent, writable)
                                    }));
                            pieces(listing::to_wire(head), pages, move |e| {
                                listing::mlsx_line(e, facts, Role::Entry, writable)
                            })
                        }
                    };
                Next::Transfer {
                    job: Job::SendPieces(pieces),
                    kind: TransferKind::Listing,
                    opening: "Here comes the directory listing.".to_owned(),
                }
            },
        );
    }
}
