//! Read access to an image layout's files, whether in a directory or a tar archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{invalid, Result, SourceError};
use crate::unpack::{self, Compression};

/// The files of an OCI layout or docker archive, by their path inside it.
pub trait LayoutFs {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>>;
    fn exists(&self, path: &str) -> bool;
    /// What the files are read from, for messages.
    fn origin(&self) -> &Path;

    fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(path)
            .and_then(|mut r| r.read_to_end(&mut buf))
            .map_err(|source| SourceError::Io { path: self.origin().join(path), source })?;
        Ok(buf)
    }
}

/// A layout in a directory.
pub struct DirFs(pub PathBuf);

impl LayoutFs for DirFs {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(File::open(self.0.join(path))?))
    }
    fn exists(&self, path: &str) -> bool {
        self.0.join(path).exists()
    }
    fn origin(&self) -> &Path {
        &self.0
    }
}

/// A tar archive, indexed once so that members can be read in any order. A
/// compressed archive is first decompressed into an unnamed temporary file.
pub struct ArchiveFs {
    path: PathBuf,
    file: File,
    members: HashMap<String, (u64, u64)>,
}

fn normalise(name: &str) -> String {
    name.trim_start_matches("./").trim_start_matches('/').to_owned()
}

impl ArchiveFs {
    /// Opens `path`; `scratch` is a directory for the decompressed copy if one is needed.
    pub fn open(path: &Path, scratch: &Path) -> Result<ArchiveFs> {
        let ioerr = |source| SourceError::Io { path: path.to_owned(), source };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(ioerr)?);
        let compression = Compression::sniff(reader.fill_buf().map_err(ioerr)?);
        if compression == Compression::None {
            return ArchiveFs::index(path, reader.into_inner());
        }
        ArchiveFs::spool(reader, path, scratch)
    }

    /// Reads a whole archive from a stream (standard input for `racker load`) into an
    /// unnamed temporary file in `scratch`, decompressing it on the way if it is
    /// compressed: a tar's members are read in any order. `origin` names it in messages.
    pub fn read_from(reader: impl Read, origin: &Path, scratch: &Path) -> Result<ArchiveFs> {
        ArchiveFs::spool(BufReader::with_capacity(1 << 20, reader), origin, scratch)
    }

    fn spool(mut reader: impl BufRead, path: &Path, scratch: &Path) -> Result<ArchiveFs> {
        let ioerr = |source| SourceError::Io { path: path.to_owned(), source };
        let compression = Compression::sniff(reader.fill_buf().map_err(ioerr)?);
        let mut tmp =
            tempfile::tempfile_in(scratch).map_err(|source| SourceError::Io { path: scratch.to_owned(), source })?;
        if compression == Compression::None {
            copy_blaming(&mut reader, &mut tmp, path, scratch)?;
        } else {
            let mut decompressed =
                unpack::decompress(reader, compression).map_err(|e| invalid(path.display().to_string(), e))?;
            copy_blaming(&mut decompressed, &mut tmp, path, scratch)?;
        }
        ArchiveFs::index(path, tmp)
    }

    /// Lists the members of the tar in `file`, which `path` names in messages.
    fn index(path: &Path, mut file: File) -> Result<ArchiveFs> {
        let ioerr = |source| SourceError::Io { path: path.to_owned(), source };
        file.seek(SeekFrom::Start(0)).map_err(ioerr)?;
        let mut members = HashMap::new();
        {
            let mut archive = tar::Archive::new(&mut file);
            for entry in archive.entries_with_seek().map_err(ioerr)? {
                let entry = entry.map_err(ioerr)?;
                if entry.header().entry_type().is_file() {
                    let name = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
                    members.insert(name, (entry.raw_file_position(), entry.size()));
                }
            }
        }
        Ok(ArchiveFs { path: path.to_owned(), file, members })
    }
}

/// Copies `from` to `to`, naming the file that failed: a read error is the archive's,
/// a write error (a full disk) the scratch directory's.
fn copy_blaming(from: &mut dyn Read, to: &mut dyn Write, from_path: &Path, to_path: &Path) -> Result<()> {
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(SourceError::Io { path: from_path.to_owned(), source }),
        };
        to.write_all(&buf[..n]).map_err(|source| SourceError::Io { path: to_path.to_owned(), source })?;
    }
}

impl LayoutFs for ArchiveFs {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let &(offset, size) = self
            .members
            .get(&normalise(path))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{path} is not in the archive")))?;
        // Duplicated descriptors share one offset: read with pread instead.
        Ok(Box::new(PositionedReader { file: self.file.try_clone()?, pos: offset, end: offset + size }))
    }
    fn exists(&self, path: &str) -> bool {
        self.members.contains_key(&normalise(path))
    }
    fn origin(&self) -> &Path {
        &self.path
    }
}

/// Reads `file[pos..end]` with positioned reads, independent of the file's offset.
struct PositionedReader {
    file: File,
    pos: u64,
    end: u64,
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
