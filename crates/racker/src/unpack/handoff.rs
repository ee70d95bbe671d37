//! A layer is unpacked by two threads: the caller's reads the stream (download or blob
//! file, decompression, the diff_id's sha256) and hands it over in chunks; the applier's
//! parses the tar and makes the files (hashing file objects as it writes them). Each half
//! costs about as much as the other, so a layer takes about the time of the slower half
//! instead of the sum. The chunks in flight are bounded: a stalled applier stalls the
//! reading, it never buffers a layer in memory.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per chunk: large enough that the channel costs nothing per byte.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight (2 MiB).
const DEPTH: usize = 8;

enum Piece {
    /// A full buffer and how much of it is the stream's.
    Data(Vec<u8>, usize),
    /// Reading the stream failed: the applier reports it where it was reading.
    Failed(io::Error),
}

/// The sending half, for the reading thread.
pub(super) struct Pump {
    full: SyncSender<Piece>,
    empty: Receiver<Vec<u8>>,
}

/// The receiving half: the stream as the applier reads it.
pub(super) struct Chunks {
    full: Receiver<Piece>,
    empty: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
    failed: bool,
}

/// A connected pump and its chunks.
pub(super) fn channel() -> (Pump, Chunks) {
    let (full_tx, full_rx) = sync_channel(DEPTH);
    let (empty_tx, empty_rx) = sync_channel(DEPTH);
    let chunks = Chunks { full: full_rx, empty: empty_tx, chunk: Vec::new(), len: 0, pos: 0, failed: false };
    (Pump { full: full_tx, empty: empty_rx }, chunks)
}

impl Pump {
    /// Hands `input` over to its end, or until the applier stops reading (it failed or
    /// is done); dropping the pump then ends the stream the applier sees.
    pub(super) fn run(self, input: &mut impl Read) {
        loop {
            // Buffers come back from the applier; a new one only while they are in flight.
            let mut chunk = self.empty.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
            let mut len = 0;
            let end = loop {
                match input.read(&mut chunk[len..]) {
                    Ok(0) => break Ok(true),
                    Ok(n) => {
                        len += n;
                        if len == CHUNK {
                            break Ok(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            if len > 0 && self.full.send(Piece::Data(chunk, len)).is_err() {
                return; // the applier stopped reading
            }
            match end {
                Ok(false) => {}
                Ok(true) => return,
                Err(e) => {
                    let _ = self.full.send(Piece::Failed(e));
                    return;
                }
            }
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if self.failed {
                return Err(io::Error::other("the layer stream failed"));
            }
            match self.full.recv() {
                Ok(Piece::Data(next, len)) => {
                    let used = std::mem::replace(&mut self.chunk, next);
                    (self.len, self.pos) = (len, 0);
                    if !used.is_empty() {
                        let _ = self.empty.try_send(used); // or dropped, if enough are back
                    }
                }
                Ok(Piece::Failed(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Err(_) => return Ok(0), // the pump is done: the end of the stream
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns `data` in odd-sized reads, then fails if `fail`.
    struct Trickle<'a> {
        data: &'a [u8],
        fail: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return if self.fail { Err(io::Error::other("broken gzip")) } else { Ok(0) };
            }
            let n = buf.len().min(self.data.len()).min(77_777);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn data() -> Vec<u8> {
        (0..(3 * CHUNK * DEPTH + 12345)).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn hands_over_every_byte_in_order() {
        let data = data();
        let (pump, mut chunks) = channel();
        let got = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut got = Vec::new();
                chunks.read_to_end(&mut got).map(|_| got)
            });
            pump.run(&mut Trickle { data: &data, fail: false });
            reader.join().expect("reader")
        });
        assert!(got.expect("read") == data);
    }

    #[test]
    fn a_failed_stream_is_an_error_after_the_bytes_before_it() {
        let data = data();
        let (pump, mut chunks) = channel();
        let (got, err) = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0; 4096];
                loop {
                    match chunks.read(&mut buf) {
                        Ok(0) => return (got, None),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => return (got, Some((e.to_string(), chunks.read(&mut buf).is_err()))),
                    }
                }
            });
            pump.run(&mut Trickle { data: &data, fail: true });
            reader.join().expect("reader")
        });
        assert!(got == data);
        assert_eq!(err, Some(("broken gzip".to_owned(), true)), "the error, and errors after it");
    }

    #[test]
    fn the_pump_stops_when_the_applier_does() {
        let data = data();
        let (pump, chunks) = channel();
        drop(chunks);
        let mut input = Trickle { data: &data, fail: false };
        pump.run(&mut input);
        assert!(input.data.len() >= data.len() - CHUNK, "read at most one chunk for nobody");
    }
}
