//! Progress of long work (downloads, unpacks), reported by the library through the
//! [`Progress`] trait; the frontends draw it (bars, lines or nothing), the library never does.

use std::io::{self, Read};

/// Receives progress events. `id` names one item (a blob's short digest), as docker's
/// per-layer lines do.
pub trait Progress: Send + Sync {
    fn begin(&self, _id: &str, _action: &str, _total: Option<u64>) {}
    fn advance(&self, _id: &str, _bytes: u64) {}
    fn end(&self, _id: &str, _status: &str) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// A reader that reports the bytes read through it.
pub struct ProgressReader<'p, R> {
    inner: R,
    id: String,
    progress: &'p dyn Progress,
}

impl<'p, R> ProgressReader<'p, R> {
    pub fn new(inner: R, id: impl Into<String>, progress: &'p dyn Progress) -> Self {
        ProgressReader { inner, id: id.into(), progress }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(&self.id, n as u64);
        Ok(n)
    }
}
