//! What the local backend hands out: a [`LocalSource`] for a download and a [`LocalSink`] for
//! an upload, both over real files, so the data channel can use `sendfile(2)` and `splice(2)`.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::LocalStorage;
use super::upload::{Finish, ReadHandle, Upload, UploadError};
use crate::storage::vpath::VPath;
use crate::storage::{
    Abort, ByteSink, ByteSource, ClientProbe, LocalTarget, StoreError, is_out_of_space,
};

/// A local file being read, positioned at the requested offset.
#[derive(Debug)]
pub(super) struct LocalSource {
    file: File,
    size: u64,
    /// The stream's reader, made on the first read: a second descriptor on the same open
    /// file, so it reads from where `file` stands, on tokio's blocking threads.
    reader: Option<tokio::fs::File>,
}

impl LocalSource {
    pub(super) fn new(handle: ReadHandle) -> LocalSource {
        LocalSource {
            file: handle.file,
            size: handle.size,
            reader: None,
        }
    }
}

impl AsyncRead for LocalSource {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let reader = match &mut this.reader {
            Some(reader) => reader,
            None => match this.file.try_clone() {
                Ok(file) => this.reader.insert(tokio::fs::File::from_std(file)),
                Err(e) => return Poll::Ready(Err(e)),
            },
        };
        Pin::new(reader).poll_read(cx, buf)
    }
}

impl ByteSource for LocalSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn local_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

/// An upload to the local file system: staged (STOR) or in place (APPE, REST+STOR, STOU).
///
/// [`ByteSink::write`] is a plain blocking write on the calling thread (page-cache writes are
/// short): unlike a write handed to another thread, none is left running in the background
/// when an ABOR drops the transfer, so the file is as complete as it is judged once the
/// transfer is gone (rolled back, measured, unlocked). The commit and the aborts run on the
/// storage's short pool. Dropped, it is an interrupted upload (see [`super::StagedUpload`]).
#[derive(Debug)]
pub(super) struct LocalSink {
    upload: Upload,
    storage: LocalStorage,
}

impl LocalSink {
    pub(super) fn new(upload: Upload, storage: LocalStorage) -> LocalSink {
        LocalSink { upload, storage }
    }
}

/// A chunk's failure as the session sees it; an I/O error keeps its own text.
fn store_error(e: UploadError) -> StoreError {
    match e {
        UploadError::Quota(e) => e.into(),
        UploadError::Io(e) if is_out_of_space(&e) => StoreError::NoSpace,
        UploadError::Io(e) => StoreError::Io(e),
    }
}

#[async_trait::async_trait]
impl ByteSink for LocalSink {
    fn target(&self) -> &VPath {
        &self.upload.target
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.upload.write(data).map_err(store_error)
    }

    fn local_target(&mut self) -> Option<LocalTarget<'_>> {
        match &self.upload.finish {
            Finish::Staged { file, .. } => Some(LocalTarget {
                file,
                charge: &mut self.upload.charge,
            }),
            Finish::InPlace(_) => None,
        }
    }

    async fn commit(self: Box<Self>, client: ClientProbe) -> Result<(), StoreError> {
        let LocalSink { upload, storage } = *self;
        storage
            .short(move |fs| match upload.finish {
                Finish::Staged { file, mut staged } => {
                    // Closed before it is renamed into place.
                    drop(file);
                    staged.attach(upload.charge);
                    staged.watch_client(client);
                    fs.commit(staged)
                }
                Finish::InPlace(mut place) => {
                    let mut charge = upload.charge;
                    // An empty upload still creates or truncates its target.
                    place.opened(&mut charge).map_err(store_error)?;
                    // Writes what the file grew by to the ledger, before the client can ask
                    // SITE QUOTA; then closes the file and releases its lock. What was
                    // written stays either way; only the reply differs.
                    drop(charge);
                    drop(place);
                    if client.gone() {
                        return Err(StoreError::Interrupted);
                    }
                    Ok(())
                }
            })
            .await
    }

    async fn abort(self: Box<Self>, why: Abort) {
        // At once, on the caller's thread (a transfer thread, where the writes ran too), with no
        // await before it: the transfer task may be cancelled at any await (ABOR, the session's
        // end), and an abort cut short there would let the upload end as an interrupted one
        // (a failed upload kept, a refused APPE not rolled back) or finish after the reply.
        let LocalSink { mut upload, .. } = *self;
        match why {
            Abort::Refused => upload.roll_back(),
            Abort::Failed => upload.discard_partial(),
        }
        drop(upload);
    }
}
