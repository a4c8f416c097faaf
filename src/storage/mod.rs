//! The storage seam: every file operation a session asks for, behind one async, object-safe
//! [`Storage`] trait, so another backend (object storage, memory) can replace the local one.
//!
//! A backend is already confined to one user's home: paths are [`VPath`]s, which cannot climb
//! out, and a backend never reveals what lies outside. Reads hand out a [`ByteSource`] and
//! uploads a [`ByteSink`]: bulk bytes stream between the data connection and the backend, never
//! through an actor's mailbox. What a backend can do is in its [`Capabilities`], which FEAT,
//! HELP SITE and the replies follow. No method blocks its caller's thread: a backend on a
//! blocking API runs it on threads of its own.
//!
//! - [`error`]: [`StoreError`], each variant with the reply it maps to.
//! - [`digest`]: the HASH algorithms, whole or streamed.
//! - [`vpath`]: the client's view of a path inside its home.
//! - [`local`]: the backend on the local file system.
//! - [`memory`]: a backend in memory, for tests.
//! - [`s3`]: the backend on an S3-compatible bucket.

pub mod digest;
pub mod error;
pub mod local;
pub mod memory;
pub mod s3;
pub mod vpath;

#[cfg(test)]
mod conformance;

use std::fs::File;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncRead;

pub use digest::HashAlgo;
pub use error::{StoreError, is_out_of_space};
use vpath::VPath;

use crate::codec::entry::FileInfo;
use crate::codec::glob::NamePattern;
use crate::quota::{Charge, QuotaReport};

/// How long one wildcard expansion may take: far beyond a healthy disk's time for
/// `max_listing_entries` names, so it stops only a stalled disk or a pathological pattern (451).
pub const GLOB_TIME_LIMIT: Duration = Duration::from_secs(10);

/// The home of anonymous sessions, an account name no user can register.
pub const ANONYMOUS: &str = "@anonymous";

/// How deep and how long a path the store lets a client create (MKD, STOR, STOU, APPE, RNTO,
/// including everything below a renamed directory). Past either: [`StoreError::TooLong`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathLimits {
    /// Names below the home: "/a/b" is 2 deep.
    pub max_depth: usize,
    /// Bytes of the path as the client sees it: "/a/b" is 4 long.
    pub max_length: usize,
}

impl Default for PathLimits {
    fn default() -> PathLimits {
        PathLimits {
            max_depth: 64,
            max_length: 4096,
        }
    }
}

/// STOU's candidates for `path`, in the order a backend tries them: its name, then `name.1` ..
/// `name.999`, in the same directory (each with its path); the name is `file` for the home.
///
/// # Errors
/// Each item: [`StoreError::InvalidName`] when the name cannot be a path there.
pub fn unique_candidates(
    path: &VPath,
) -> impl Iterator<Item = Result<(String, VPath), StoreError>> + '_ {
    let base = path.file_name().unwrap_or("file");
    let parent = path.parent().unwrap_or_else(VPath::root);
    (0..1000).map(move |n| {
        let name = if n == 0 {
            base.to_owned()
        } else {
            format!("{base}.{n}")
        };
        let candidate = parent.resolve(&name).map_err(|_| StoreError::InvalidName)?;
        Ok((name, candidate))
    })
}

/// What a listing request found: a directory's entries, one file, or the names a wildcard
/// pattern matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Whether the listed path is a directory (else `entries` is that one file, or the matches).
    pub is_dir: bool,
    /// Whether `entries` are the matches of a wildcard pattern in the path's last component.
    pub matched: bool,
    /// The listed directory itself (MLSD's `cdir`), named `.`.
    pub this: Option<FileInfo>,
    /// Its parent, unless it is the home (MLSD's `pdir`), named `..`.
    pub parent: Option<FileInfo>,
    /// The entries, sorted by name.
    pub entries: Vec<FileInfo>,
}

/// A listing's entries a page at a time, each page sorted by name; the next page is read
/// only when the stream is polled, so a reader holds one page, not the directory.
pub type Pages = futures::stream::BoxStream<'static, Result<Vec<FileInfo>, StoreError>>;

/// A listing as it streams (LIST, NLST, MLSD): what [`Listing`] says of the listed path, now,
/// and its entries as [`Pages`], read while the data connection sends them.
pub struct ListingPages {
    /// As [`Listing::is_dir`].
    pub is_dir: bool,
    /// As [`Listing::matched`].
    pub matched: bool,
    /// As [`Listing::this`].
    pub this: Option<FileInfo>,
    /// As [`Listing::parent`].
    pub parent: Option<FileInfo>,
    /// The entries. A page that fails ends the listing (the transfer's 451).
    pub pages: Pages,
    /// Whether the pages are read from storage while they are sent (else the listing was read
    /// whole before it was handed out, and nothing more is read).
    pub streamed: bool,
}

impl From<Listing> for ListingPages {
    /// A whole listing as one page.
    fn from(listing: Listing) -> ListingPages {
        ListingPages {
            is_dir: listing.is_dir,
            matched: listing.matched,
            this: listing.this,
            parent: listing.parent,
            pages: Box::pin(futures::stream::once(std::future::ready(Ok(
                listing.entries
            )))),
            streamed: false,
        }
    }
}

impl std::fmt::Debug for ListingPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListingPages")
            .field("is_dir", &self.is_dir)
            .field("matched", &self.matched)
            .finish_non_exhaustive()
    }
}

/// How an upload writes its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// STOR: staged and put in place at the commit; readers never see half a file, and a
    /// failed upload leaves the old one.
    Replace,
    /// APPE: append to the file (created when missing).
    Append,
    /// REST + STOR: keep the first `n` bytes, write from there (resume).
    At(u64),
    /// STOU: a new file under a name not yet taken, derived from the target's name.
    Unique,
}

/// What a backend can do beyond reading and replacing whole files. A capability it lacks is
/// left out of FEAT and HELP SITE, and its command is refused with 550 (or 502 where the
/// command as a whole is not implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// APPE.
    pub append: bool,
    /// REST before STOR: writing from an offset into an existing file.
    pub write_at: bool,
    /// RNFR/RNTO of a directory.
    pub rename_dirs: bool,
    /// MFMT (and the `modify` fact of MLST as writable).
    pub set_mtime: bool,
    /// SITE CHMOD (and UNIX.mode in MLST).
    pub chmod: bool,
    /// Empty directories exist in their own right (else a directory exists while something
    /// lies under it, or through a marker).
    pub empty_dirs: bool,
}

impl Capabilities {
    /// Everything: what a POSIX file system offers.
    pub const ALL: Capabilities = Capabilities {
        append: true,
        write_at: true,
        rename_dirs: true,
        set_mtime: true,
        chmod: true,
        empty_dirs: true,
    };
}

/// Tells whether the client has gone away (closed its control connection). In stream mode the
/// end of an upload's data is the close of its connection, so a client killed mid-upload looks
/// like one that finished; but it has closed its control connection too, and the commit
/// checks that after its last write reached storage, which gives the dying client's kernel
/// time to close both.
pub struct ClientProbe(Box<dyn Fn() -> bool + Send>);

impl ClientProbe {
    /// A probe that calls `gone`.
    pub fn new(gone: impl Fn() -> bool + Send + 'static) -> ClientProbe {
        ClientProbe(Box::new(gone))
    }

    /// Whether the client has gone.
    pub fn gone(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for ClientProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientProbe")
    }
}

/// A file being read (RETR): its bytes from the requested offset, as a stream.
pub trait ByteSource: AsyncRead + Send + Unpin {
    /// The file's full size in bytes (not reduced by the offset).
    fn size(&self) -> u64;

    /// The local file behind the stream, positioned where the stream is, when there is one:
    /// the data channel then sends it with `sendfile(2)`, without a copy through user space.
    /// Reading the stream and sending the file must not be mixed.
    fn local_file(&self) -> Option<&File>;
}

/// An upload in progress (STOR, APPE, REST+STOR, STOU). Every byte is charged to the quota
/// before it reaches storage, so storage never holds a byte beyond the limit.
///
/// It ends in one of three ways: [`ByteSink::commit`] once every byte has arrived (the target
/// then holds the upload, atomically for [`WriteMode::Replace`]); [`ByteSink::abort`] after a
/// quota refusal or a failure on the server's side (see [`Abort`]); or dropped, which is an
/// interruption (ABOR, a failed data connection, a client that went away): an in-place upload
/// keeps what it wrote, and a staged upload of a name that held no file is kept under that
/// name for a resume when the backend keeps interrupted uploads; anything else is dropped and
/// the old file stays.
#[async_trait::async_trait]
pub trait ByteSink: Send {
    /// The path the client sees (for STOU, the name chosen).
    fn target(&self) -> &VPath;

    /// Writes the next chunk, charged to the quota first.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`] (nothing of the chunk is written), [`StoreError::NoSpace`],
    /// [`StoreError::Io`].
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;

    /// The local file the bytes go to and its quota charge, when the upload writes one
    /// directly (a staged local upload): the data channel then moves the bytes with
    /// `splice(2)`, charging each chunk to [`LocalTarget::charge`] before it lands.
    fn local_target(&mut self) -> Option<LocalTarget<'_>>;

    /// Puts the upload in place once every byte has arrived; `client` is asked at the end
    /// whether the client is still there (if not, the upload ends as an interrupted one and
    /// this returns [`StoreError::Interrupted`]).
    ///
    /// # Errors
    /// As for [`Storage::open_write`] if the target changed since it was opened;
    /// [`StoreError::NoSpace`]; [`StoreError::QuotaExceeded`] when what the upload adds,
    /// measured against the file it replaces now, does not fit.
    async fn commit(self: Box<Self>, client: ClientProbe) -> Result<(), StoreError>;

    /// Ends the upload without a commit, for the reason given. A backend does the part that
    /// decides what is kept before its first await: the transfer task that calls this may be
    /// cancelled at any await (ABOR, the session's end), and the upload must not then end as
    /// an interrupted one.
    async fn abort(self: Box<Self>, why: Abort);
}

/// Why an upload ends without a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// The quota refused a chunk: nothing of the upload is kept; an in-place target goes back
    /// to the length it had when the upload opened it (removed, if the upload created it).
    Refused,
    /// A failure on the server's side (disk full, an I/O error): a staged upload keeps
    /// nothing, since what it holds may not be what the client sent; an in-place one keeps what
    /// it wrote, as after any other interruption.
    Failed,
}

/// A local file an upload writes to directly, with its quota charge.
pub struct LocalTarget<'a> {
    /// The file, positioned where the next byte goes.
    pub file: &'a File,
    /// The upload's quota charge: [`Charge::add`] before each chunk lands.
    pub charge: &'a mut Charge,
}

/// A storage backend: every file operation, already confined to one user's home.
///
/// Object-safe, so sessions share an `Arc<dyn Storage>`; async, so no call blocks a session's
/// thread.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Whether the backend answers now (`/ready`): the homes directory is there, the bucket
    /// answers a listing. A backend in memory always does.
    ///
    /// # Errors
    /// Why it does not answer, as a sentence.
    async fn answers(&self) -> Result<(), String> {
        Ok(())
    }

    /// Create the user's home; succeeds if it already exists.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a name that cannot be a home ("", ".", "..", contains '/').
    async fn create_home(&self, user: &str) -> Result<(), StoreError>;

    /// Describe one file or directory.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if it does not exist or lies outside the home.
    async fn stat(&self, user: &str, path: &VPath) -> Result<FileInfo, StoreError>;

    /// A directory's entries sorted by name; for a file, a one-entry listing of that file.
    /// Entries that lead outside the home, dangle, or are special files are left out.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if `path` does not exist or lies outside the home;
    /// [`StoreError::TooManyEntries`] past the listing limit.
    async fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError>;

    /// As `list`, with the entries read a page at a time while they are sent. The default is
    /// `list` as one page (sorted by name, under the listing limit); a backend that reads its
    /// directories in pages (S3) streams them instead, each page sorted by name and the pages
    /// in the backend's own order, without the listing limit, which bounds what one listing
    /// holds and a stream holds one page.
    ///
    /// # Errors
    /// As for `list`, for what is known before the first page (a missing path); a page that
    /// fails is an error item of the stream.
    async fn list_pages(&self, user: &str, path: &VPath) -> Result<ListingPages, StoreError> {
        self.list(user, path).await.map(ListingPages::from)
    }

    /// The entries of directory `dir` whose names match `pattern`, sorted by name, left out as
    /// for `list`; the directory is read under the same entry limit, and within
    /// [`GLOB_TIME_LIMIT`].
    ///
    /// # Errors
    /// As for `list`; [`StoreError::NotADirectory`] if `dir` is a file;
    /// [`StoreError::TimedOut`] past the deadline.
    async fn glob(
        &self,
        user: &str,
        dir: &VPath,
        pattern: &NamePattern,
    ) -> Result<Listing, StoreError>;

    /// Open a regular file for reading from `offset`.
    ///
    /// # Errors
    /// [`StoreError::IsADirectory`] for a directory; [`StoreError::NotFound`] as for `stat`;
    /// [`StoreError::BadOffset`] beyond the end.
    async fn open_read(
        &self,
        user: &str,
        path: &VPath,
        offset: u64,
    ) -> Result<Box<dyn ByteSource>, StoreError>;

    /// Start an upload. The target is checked now: its parent must be an existing directory
    /// and it must not be a directory. [`WriteMode::Replace`] stages the bytes and puts them in
    /// place at the commit; the other modes write the target itself under its write lock, and
    /// open, create or truncate it only when the first byte arrives (or an empty upload
    /// commits), so an upload that never gets a byte leaves the file as it was.
    ///
    /// # Errors
    /// [`StoreError::IsADirectory`], [`StoreError::NotADirectory`] (parent is a file),
    /// [`StoreError::NotFound`] (parent missing; or a missing file for `At`),
    /// [`StoreError::Busy`] (another in-place writer has the file), [`StoreError::BadOffset`]
    /// (`At` beyond the end), [`StoreError::TooLong`] (past the path limits),
    /// [`StoreError::QuotaExceeded`] (a new file past the file limit),
    /// [`StoreError::PermissionDenied`] for a mode the backend cannot do.
    async fn open_write(
        &self,
        user: &str,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<Box<dyn ByteSink>, StoreError>;

    /// Create a directory.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`]; [`StoreError::NotFound`] if the parent is missing;
    /// [`StoreError::TooLong`] past the path limits.
    async fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError>;

    /// Remove an empty directory; never the home itself.
    ///
    /// # Errors
    /// [`StoreError::NotEmpty`], [`StoreError::NotADirectory`] (also for a symlink),
    /// [`StoreError::PermissionDenied`] for "/".
    async fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError>;

    /// Remove a file or a symlink (the link itself, not its target).
    ///
    /// # Errors
    /// [`StoreError::IsADirectory`] for a directory.
    async fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError>;

    /// Rename a file or directory. Replaces an existing file at `to`, as rename(2) does.
    ///
    /// # Errors
    /// [`StoreError::PermissionDenied`] if either path is "/" (or for a directory, without
    /// [`Capabilities::rename_dirs`]); [`StoreError::InvalidName`] when moving a directory into
    /// its own subtree; [`StoreError::TooLong`] when the moved tree would pass the path limits;
    /// on object storage, [`StoreError::TooManyToRename`] and [`StoreError::TooBigToRename`]
    /// past what it copies.
    async fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError>;

    /// Set the modification time of a file or directory (MFMT).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] as for `stat`; [`StoreError::PermissionDenied`] without
    /// [`Capabilities::set_mtime`].
    async fn set_modified(
        &self,
        user: &str,
        path: &VPath,
        time: SystemTime,
    ) -> Result<(), StoreError>;

    /// Set the permission bits (at most 0o777) of a file or directory (SITE CHMOD), never of
    /// the home itself.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] as for `stat`; [`StoreError::PermissionDenied`] for the home,
    /// or without [`Capabilities::chmod`].
    async fn chmod(&self, user: &str, path: &VPath, mode: u32) -> Result<(), StoreError>;

    /// Digest of a regular file's contents (HASH): lowercase hex, and the file size.
    ///
    /// # Errors
    /// [`StoreError::IsADirectory`]; [`StoreError::NotFound`] as for `stat`.
    async fn hash(
        &self,
        user: &str,
        path: &VPath,
        algo: HashAlgo,
    ) -> Result<(String, u64), StoreError>;

    /// The user's usage and limits (SITE QUOTA).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the usage cannot be read or counted.
    async fn quota(&self, user: &str) -> Result<QuotaReport, StoreError>;
}
