//! A blocking `Read` over a registry blob, for the store's (synchronous) ingest: bytes
//! arrive from the async client chunk by chunk, and a dropped connection is resumed
//! with a `Range` request from the last byte received, so the unpacker never notices.
//!
//! Bounded against a hostile registry: never more than the declared size is read (a
//! registry that sends more is refused), a blob gets a few attempts and the whole pull a
//! few retries more, and each wait for a byte ends after the session's idle timeout.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bytes::{Buf, Bytes};
use reqwest::{Response, StatusCode};

use super::endpoint::Session;
use super::RegistryError;

/// What every blob of one pull reads from: the session, the repository, the flag that
/// stops all of them once one has failed, and the retries the pull has spent so far.
pub(crate) struct BlobSource<'a> {
    pub session: &'a Session,
    pub reference: &'a oci_client::Reference,
    pub cancelled: &'a AtomicBool,
    pub retries: AtomicU32,
}

impl<'a> BlobSource<'a> {
    pub fn new(session: &'a Session, reference: &'a oci_client::Reference, cancelled: &'a AtomicBool) -> Self {
        BlobSource { session, reference, cancelled, retries: AtomicU32::new(0) }
    }

    /// A reader of the blob `digest` (`size` bytes, from the manifest).
    pub fn reader(&'a self, digest: String, size: u64) -> BlobReader<'a> {
        BlobReader {
            source: self,
            digest,
            size,
            response: None,
            chunk: Bytes::new(),
            offset: 0,
            skip: 0,
            attempts: 0,
            failure: None,
        }
    }
}

pub(crate) struct BlobReader<'a> {
    source: &'a BlobSource<'a>,
    digest: String,
    size: u64,
    response: Option<Response>,
    chunk: Bytes,
    offset: u64,
    /// Bytes still to drop from the response: a registry may answer a `Range` request
    /// with the whole blob.
    skip: u64,
    /// Requests made for this blob.
    attempts: u32,
    /// The registry error behind a failed read, for a better message than the I/O error
    /// that reaches the unpacker.
    pub failure: Option<RegistryError>,
}

impl BlobReader<'_> {
    fn fail(&mut self, err: RegistryError) -> io::Error {
        let e = io::Error::other(err.to_string());
        self.failure = Some(err);
        e
    }

    fn refuse(&mut self, detail: String) -> io::Error {
        let registry = self.source.session.endpoint.registry.clone();
        self.fail(RegistryError::Download { registry, digest: self.digest.clone(), detail })
    }

    /// Gives up once this blob or the whole pull has used its attempts; else waits
    /// before the next.
    fn retry(&mut self, why: String) -> io::Result<()> {
        self.response = None;
        let limits = self.source.session.limits;
        let pull_retries = self.source.retries.fetch_add(1, Ordering::Relaxed) + 1;
        if self.attempts >= limits.attempts_per_blob {
            return Err(self.refuse(format!("gave up after {} attempts: {why}", self.attempts)));
        }
        if pull_retries > limits.retries_per_pull {
            return Err(
                self.refuse(format!("gave up: the pull has retried {} times already: {why}", limits.retries_per_pull))
            );
        }
        tracing::warn!(digest = %self.digest, offset = self.offset, "retrying download: {why}");
        std::thread::sleep(limits.backoff(self.attempts));
        Ok(())
    }

    fn open(&mut self) -> io::Result<()> {
        self.attempts += 1;
        let session = self.source.session;
        let request = session.get(self.source.reference, "blobs", &self.digest, &[], self.offset);
        match session.runtime.block_on(request) {
            Ok(response) => {
                let partial = response.status() == StatusCode::PARTIAL_CONTENT;
                let expected = if partial { self.size - self.offset } else { self.size };
                if let Some(announced) = response.content_length().filter(|&len| len != expected) {
                    return Err(self.refuse(format!(
                        "the registry announces {announced} bytes where the manifest declares {} (from byte {})",
                        self.size,
                        if partial { self.offset } else { 0 }
                    )));
                }
                // Asked from an offset, a registry may still send the whole blob.
                self.skip = if partial { 0 } else { self.offset };
                self.response = Some(response);
                Ok(())
            }
            Err(failure) if failure.retryable() => self.retry(failure.detail().to_owned()),
            Err(failure) => {
                let err = failure.into_error(&session.endpoint.registry, &format!("blob {}", self.digest));
                Err(self.fail(err))
            }
        }
    }
}

impl BlobReader<'_> {
    /// Called once the declared size has arrived: the response must end here. A registry
    /// whose chunks happen to stop exactly at the declared size and then stream on is
    /// refused as one that overshoots within a chunk is.
    fn expect_end(&mut self) -> io::Result<usize> {
        let Some(mut response) = self.response.take() else { return Ok(0) };
        loop {
            match self.source.session.runtime.block_on(response.chunk()) {
                Ok(Some(bytes)) if bytes.is_empty() => {}
                Ok(Some(_)) => {
                    return Err(self
                        .refuse(format!("the registry sent more than the {} bytes the manifest declares", self.size)))
                }
                // All declared bytes are here; the digest check decides the rest.
                Ok(None) | Err(_) => return Ok(0),
            }
        }
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.source.cancelled.load(Ordering::Relaxed) {
                // Not ErrorKind::Interrupted: std's readers retry that forever.
                return Err(self.fail(RegistryError::Cancelled));
            }
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                self.offset += n as u64;
                return Ok(n);
            }
            if self.offset >= self.size {
                return self.expect_end();
            }
            let Some(response) = self.response.as_mut() else {
                self.open()?;
                continue;
            };
            match self.source.session.runtime.block_on(response.chunk()) {
                Ok(Some(mut bytes)) => {
                    let skipped = self.skip.min(bytes.len() as u64);
                    bytes.advance(skipped as usize);
                    self.skip -= skipped;
                    if self.offset + bytes.len() as u64 > self.size {
                        return Err(self.refuse(format!(
                            "the registry sent more than the {} bytes the manifest declares",
                            self.size
                        )));
                    }
                    self.chunk = bytes;
                }
                Ok(None) => self.retry(format!("the connection ended at byte {} of {}", self.offset, self.size))?,
                Err(e) => {
                    let failure = self.source.session.transport_failure(&e);
                    self.retry(failure.detail().to_owned())?
                }
            }
        }
    }
}
