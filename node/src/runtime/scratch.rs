//! A pod's scratch directory (`/tmp` in the guest) and its quota: bytes on
//! disk and entries, shared by all of the pod's instances.
//!
//! The quota is kept where the guest's writes pass: wasi:filesystem is linked
//! through [`QuotaFs`], which charges each write (and each file or directory
//! made) before passing it on, and wraps the file streams it hands out so
//! their writes are charged too. Charges are generous (whole blocks), and when
//! they would pass the quota the directory is measured again (at most ten
//! times a second) to learn its true use; what still does not fit fails
//! inside the guest with "no space left on device". So the directory never
//! holds more than its quota, whatever the guest writes, seeks or creates.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{FsError, FsResult};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{
    DynInputStream, DynOutputStream, OutputStream, StreamError, StreamResult,
};

/// What one pod may keep in its scratch directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScratchQuota {
    pub bytes: u64,
    pub files: u64,
}

impl Default for ScratchQuota {
    fn default() -> Self {
        ScratchQuota {
            bytes: 64 << 20,
            files: 4096,
        }
    }
}

/// Charged per write beyond its length: a write may start a new block.
const BLOCK: u64 = 4096;
/// Least time between two measurements of one directory, and after the
/// guest removed something (room may have come back).
const REMEASURE: Duration = Duration::from_millis(100);
const REMEASURE_AFTER_REMOVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct Usage {
    bytes: u64,
    files: u64,
    measured: Option<Instant>,
    /// Something was removed since the last measurement.
    shrunk: bool,
}

/// A pod's scratch directory. Removed when its last holder lets go: the pod,
/// and any request still running in it after the pod was retired.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    quota: ScratchQuota,
    usage: Mutex<Usage>,
}

/// Bytes on disk (allocated blocks) and entries under `dir`.
fn measure(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            files += 1;
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    (bytes, files)
}

impl ScratchDir {
    /// Creates the directory (or takes over the one a previous run left).
    pub fn create(path: PathBuf, quota: ScratchQuota) -> std::io::Result<Arc<ScratchDir>> {
        std::fs::create_dir_all(&path)?;
        let (bytes, files) = measure(&path);
        Ok(Arc::new(ScratchDir {
            path,
            quota,
            usage: Mutex::new(Usage {
                bytes,
                files,
                measured: Some(Instant::now()),
                shrunk: false,
            }),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn quota(&self) -> ScratchQuota {
        self.quota
    }

    /// Bytes and entries the directory holds now (measured).
    pub fn usage(&self) -> (u64, u64) {
        measure(&self.path)
    }

    /// Takes room for `bytes` more bytes and `files` more entries, or says
    /// there is none.
    fn charge(&self, bytes: u64, files: u64) -> bool {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let fits = |u: &Usage| {
            u.bytes.saturating_add(bytes) <= self.quota.bytes
                && u.files.saturating_add(files) <= self.quota.files
        };
        let wait = if usage.shrunk {
            REMEASURE_AFTER_REMOVAL
        } else {
            REMEASURE
        };
        if !fits(&usage) && usage.measured.is_none_or(|at| at.elapsed() >= wait) {
            let (measured_bytes, measured_files) = measure(&self.path);
            usage.bytes = measured_bytes;
            usage.files = measured_files;
            usage.measured = Some(Instant::now());
            usage.shrunk = false;
        }
        if !fits(&usage) {
            return false;
        }
        usage.bytes += bytes;
        usage.files += files;
        true
    }

    /// The guest removed or truncated something: the next charge that does
    /// not fit may measure again sooner.
    fn shrunk(&self) {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).shrunk = true;
    }

    /// What a write of `len` bytes is charged.
    fn charge_write(&self, len: u64) -> bool {
        self.charge(
            len.div_ceil(BLOCK).saturating_add(1).saturating_mul(BLOCK),
            0,
        )
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        let remove = move || match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %path.display(), "cannot remove scratch dir: {e}"),
        };
        // A guest may have left a big tree: not on an async worker, not under
        // whatever lock the last holder dropped it in.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

fn no_space() -> std::io::Error {
    // ENOSPC: the guest sees "no space left on device" (insufficient-space).
    std::io::Error::from_raw_os_error(28)
}

/// A file's output stream whose writes are charged to the pod's quota.
struct ChargedStream {
    inner: DynOutputStream,
    scratch: Arc<ScratchDir>,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for ChargedStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi_io::async_trait]
impl OutputStream for ChargedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !self.scratch.charge_write(bytes.len() as u64) {
            return Err(StreamError::LastOperationFailed(no_space().into()));
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        if !self.scratch.charge_write(nelem as u64) {
            return Err(StreamError::LastOperationFailed(no_space().into()));
        }
        self.inner.write_zeroes(nelem)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// wasi:filesystem as the pod's instances see it: wasmtime's, with every
/// way to grow the scratch directory charged to its quota first.
pub(crate) struct QuotaFs<'a> {
    pub(crate) inner: WasiFilesystemCtxView<'a>,
    pub(crate) scratch: Option<Arc<ScratchDir>>,
}

/// The [`HasData`] naming [`QuotaFs`] for the linker.
pub(crate) struct QuotaFilesystem;

impl HasData for QuotaFilesystem {
    type Data<'a> = QuotaFs<'a>;
}

impl QuotaFs<'_> {
    fn charge(&self, bytes: u64, files: u64) -> FsResult<()> {
        match &self.scratch {
            Some(scratch) if !scratch.charge(bytes, files) => {
                Err(ErrorCode::InsufficientSpace.into())
            }
            _ => Ok(()),
        }
    }

    fn shrunk(&self) {
        if let Some(scratch) = &self.scratch {
            scratch.shrunk();
        }
    }

    /// Swaps a file stream just made for one whose writes are charged.
    fn charged(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let Some(scratch) = self.scratch.clone() else {
            return Ok(stream);
        };
        let inner = self.inner.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(ChargedStream { inner, scratch });
        Ok(self.inner.table.push(wrapped)?)
    }
}

impl types::Host for QuotaFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.inner, err)
    }
}

impl HostDirectoryEntryStream for QuotaFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.inner, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

type Fd = Resource<types::Descriptor>;

impl HostDescriptor for QuotaFs<'_> {
    async fn write(
        &mut self,
        fd: Fd,
        buffer: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        match &self.scratch {
            Some(scratch) if !scratch.charge_write(buffer.len() as u64) => {
                Err(ErrorCode::InsufficientSpace.into())
            }
            _ => HostDescriptor::write(&mut self.inner, fd, buffer, offset).await,
        }
    }

    fn write_via_stream(
        &mut self,
        fd: Fd,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let stream = HostDescriptor::write_via_stream(&mut self.inner, fd, offset)?;
        self.charged(stream)
    }

    fn append_via_stream(&mut self, fd: Fd) -> FsResult<Resource<DynOutputStream>> {
        let stream = HostDescriptor::append_via_stream(&mut self.inner, fd)?;
        self.charged(stream)
    }

    async fn open_at(
        &mut self,
        fd: Fd,
        path_flags: types::PathFlags,
        path: String,
        open_flags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Fd> {
        if open_flags.contains(types::OpenFlags::CREATE) {
            self.charge(BLOCK, 1)?;
        }
        HostDescriptor::open_at(&mut self.inner, fd, path_flags, path, open_flags, flags).await
    }

    async fn create_directory_at(&mut self, fd: Fd, path: String) -> FsResult<()> {
        self.charge(BLOCK, 1)?;
        HostDescriptor::create_directory_at(&mut self.inner, fd, path).await
    }

    async fn symlink_at(&mut self, fd: Fd, old_path: String, new_path: String) -> FsResult<()> {
        self.charge(BLOCK, 1)?;
        HostDescriptor::symlink_at(&mut self.inner, fd, old_path, new_path).await
    }

    async fn link_at(
        &mut self,
        fd: Fd,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Fd,
        new_path: String,
    ) -> FsResult<()> {
        self.charge(0, 1)?;
        HostDescriptor::link_at(
            &mut self.inner,
            fd,
            old_path_flags,
            old_path,
            new_descriptor,
            new_path,
        )
        .await
    }

    // Everything else passes through unchanged.

    async fn advise(
        &mut self,
        fd: Fd,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        HostDescriptor::advise(&mut self.inner, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Fd) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.inner, fd).await
    }

    async fn get_flags(&mut self, fd: Fd) -> FsResult<types::DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.inner, fd).await
    }

    async fn get_type(&mut self, fd: Fd) -> FsResult<types::DescriptorType> {
        HostDescriptor::get_type(&mut self.inner, fd).await
    }

    // Growing a file this way leaves a hole: no blocks, nothing to charge;
    // shrinking it frees blocks.
    async fn set_size(&mut self, fd: Fd, size: types::Filesize) -> FsResult<()> {
        let resized = HostDescriptor::set_size(&mut self.inner, fd, size).await;
        self.shrunk();
        resized
    }

    async fn set_times(
        &mut self,
        fd: Fd,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times(&mut self.inner, fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Fd,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.inner, fd, len, offset).await
    }

    async fn read_directory(&mut self, fd: Fd) -> FsResult<Resource<types::DirectoryEntryStream>> {
        HostDescriptor::read_directory(&mut self.inner, fd).await
    }

    async fn sync(&mut self, fd: Fd) -> FsResult<()> {
        HostDescriptor::sync(&mut self.inner, fd).await
    }

    async fn stat(&mut self, fd: Fd) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat(&mut self.inner, fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Fd,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat_at(&mut self.inner, fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Fd,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times_at(&mut self.inner, fd, path_flags, path, atim, mtim).await
    }

    fn drop(&mut self, fd: Fd) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.inner, fd)
    }

    async fn readlink_at(&mut self, fd: Fd, path: String) -> FsResult<String> {
        HostDescriptor::readlink_at(&mut self.inner, fd, path).await
    }

    async fn remove_directory_at(&mut self, fd: Fd, path: String) -> FsResult<()> {
        let removed = HostDescriptor::remove_directory_at(&mut self.inner, fd, path).await;
        self.shrunk();
        removed
    }

    async fn rename_at(
        &mut self,
        fd: Fd,
        old_path: String,
        new_fd: Fd,
        new_path: String,
    ) -> FsResult<()> {
        HostDescriptor::rename_at(&mut self.inner, fd, old_path, new_fd, new_path).await
    }

    async fn unlink_file_at(&mut self, fd: Fd, path: String) -> FsResult<()> {
        let removed = HostDescriptor::unlink_file_at(&mut self.inner, fd, path).await;
        self.shrunk();
        removed
    }

    fn read_via_stream(
        &mut self,
        fd: Fd,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        HostDescriptor::read_via_stream(&mut self.inner, fd, offset)
    }

    async fn is_same_object(&mut self, fd: Fd, other: Fd) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.inner, fd, other).await
    }

    async fn metadata_hash(&mut self, fd: Fd) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.inner, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Fd,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash_at(&mut self.inner, fd, path_flags, path).await
    }
}
