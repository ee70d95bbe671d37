//! A blocking `Read` over a registry blob, for the store's (synchronous) ingest: bytes
//! arrive from the async client chunk by chunk, and a dropped connection is resumed
//! with a `Range` request from the last byte received, so the unpacker never notices.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use oci_client::client::BlobResponse;

use super::{classify, RegistryError};

const MAX_ATTEMPTS: u32 = 5;

/// What every layer of one pull reads from: the registry, the repository, and the flag
/// that stops all of them once one has failed.
pub(crate) struct BlobSource<'a> {
    pub runtime: &'a tokio::runtime::Handle,
    pub client: &'a oci_client::Client,
    pub reference: &'a oci_client::Reference,
    pub registry: &'a str,
    pub cancelled: &'a AtomicBool,
}

impl<'a> BlobSource<'a> {
    /// A reader of the blob `digest` (`size` bytes, from the manifest).
    pub fn reader(&'a self, digest: String, size: u64) -> BlobReader<'a> {
        BlobReader {
            source: self,
            digest,
            size,
            stream: None,
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
    stream: Option<BoxStream<'static, io::Result<Bytes>>>,
    chunk: Bytes,
    offset: u64,
    skip: u64,
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

    /// Counts a failed attempt and waits before the next; gives up after a few.
    fn retry(&mut self, why: String) -> io::Result<()> {
        self.stream = None;
        self.attempts += 1;
        if self.attempts >= MAX_ATTEMPTS {
            let registry = self.source.registry.to_owned();
            let detail = format!("downloading {} failed {MAX_ATTEMPTS} times: {why}", self.digest);
            return Err(self.fail(RegistryError::Unreachable { registry, detail }));
        }
        tracing::warn!(digest = %self.digest, offset = self.offset, "retrying download: {why}");
        std::thread::sleep(Duration::from_millis(250 << self.attempts));
        Ok(())
    }

    fn open(&mut self) -> io::Result<()> {
        let request =
            self.source.client.pull_blob_stream_partial(self.source.reference, self.digest.as_str(), self.offset, None);
        match self.source.runtime.block_on(request) {
            // Asked from an offset, a registry may still send the whole blob.
            Ok(BlobResponse::Full(s)) => {
                self.skip = self.offset;
                self.stream = Some(s.stream);
                Ok(())
            }
            Ok(BlobResponse::Partial(s)) => {
                self.skip = 0;
                self.stream = Some(s.stream);
                Ok(())
            }
            Err(e) => match classify(e, self.source.registry, &self.digest) {
                err @ (RegistryError::Unreachable { .. } | RegistryError::Protocol { .. }) => {
                    self.retry(err.to_string())
                }
                err => Err(self.fail(err)),
            },
        }
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.source.cancelled.load(Ordering::Relaxed) {
                // Not ErrorKind::Interrupted: std's readers retry that forever.
                return Err(io::Error::other("pull cancelled"));
            }
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                self.offset += n as u64;
                return Ok(n);
            }
            if self.offset >= self.size {
                return Ok(0);
            }
            let Some(stream) = self.stream.as_mut() else {
                self.open()?;
                continue;
            };
            match self.source.runtime.block_on(stream.next()) {
                Some(Ok(mut bytes)) => {
                    let skipped = self.skip.min(bytes.len() as u64);
                    bytes.advance(skipped as usize);
                    self.skip -= skipped;
                    self.chunk = bytes;
                    self.attempts = 0;
                }
                Some(Err(e)) => self.retry(e.to_string())?,
                None => self.retry(format!("connection closed at byte {} of {}", self.offset, self.size))?,
            }
        }
    }
}
