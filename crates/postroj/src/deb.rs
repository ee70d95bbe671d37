//! The control file of a `.deb`, read on the host: what a package says it needs
//! (`Depends`, `Pre-Depends`, …) decides whether a cached dependency resolution still
//! holds, without starting a container to ask apt.
//!
//! A `.deb` is an `ar` archive: `debian-binary`, then `control.tar[.gz|.xz|.zst]`, then
//! the data. Only the control member is read, within bounds: a hostile file costs at most
//! [`MAX_CONTROL_MEMBER`] read and [`MAX_CONTROL_FILE`] kept.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// The largest control member read (compressed), and the largest control file kept.
pub const MAX_CONTROL_MEMBER: u64 = 16 << 20;
pub const MAX_CONTROL_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a .deb postroj can read: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The fields of a control file, by name (as written), values with continuation lines
/// joined by `\n`.
pub type Control = BTreeMap<String, String>;

/// Reads the control file of the `.deb` at `path`.
pub fn control(path: &Path) -> Result<Control, DebError> {
    let invalid = |reason: &str| DebError::Invalid { path: path.to_owned(), reason: reason.to_owned() };
    let io = |source| DebError::Io { path: path.to_owned(), source };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).map_err(io)?;
    if &magic != b"!<arch>\n" {
        return Err(invalid("no ar archive header"));
    }
    loop {
        let mut header = [0u8; 60];
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(invalid("no control.tar member")),
            Err(e) => return Err(io(e)),
        }
        if &header[58..60] != b"`\n" {
            return Err(invalid("a corrupt ar member header"));
        }
        let name = String::from_utf8_lossy(&header[..16]).trim_end().trim_end_matches('/').to_owned();
        let size: u64 = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| invalid("an ar member size that is not a number"))?;
        if let Some(compression) = name.strip_prefix("control.tar") {
            if size > MAX_CONTROL_MEMBER {
                return Err(invalid(&format!("its control member is larger than {MAX_CONTROL_MEMBER} bytes")));
            }
            let member = (&mut file).take(size);
            let reader: Box<dyn Read + '_> = match compression {
                "" => Box::new(member),
                ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
                ".xz" => Box::new(liblzma::read::XzDecoder::new(member)),
                ".zst" => Box::new(zstd::Decoder::new(member).map_err(io)?),
                other => return Err(invalid(&format!("an unknown control compression {other:?}"))),
            };
            return control_from_tar(reader).map_err(|e| match e {
                TarError::Io(source) => io(source),
                TarError::Invalid(reason) => invalid(reason),
            });
        }
        // Members are padded to an even size.
        io::copy(&mut (&mut file).take(size + size % 2), &mut io::sink()).map_err(io)?;
    }
}

enum TarError {
    Io(io::Error),
    Invalid(&'static str),
}

fn control_from_tar(reader: impl Read) -> Result<Control, TarError> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(TarError::Io)? {
        let entry = entry.map_err(TarError::Io)?;
        let is_control = entry.path().is_ok_and(|p| p.as_os_str() == "./control" || p.as_os_str() == "control");
        if !is_control {
            continue;
        }
        if entry.size() > MAX_CONTROL_FILE {
            return Err(TarError::Invalid("its control file is larger than 1 MiB"));
        }
        let mut text = String::new();
        entry.take(MAX_CONTROL_FILE).read_to_string(&mut text).map_err(TarError::Io)?;
        return Ok(parse(&text));
    }
    Err(TarError::Invalid("no control file in its control member"))
}

/// Parses one control stanza (deb822): `Field: value`, continuation lines indented.
pub fn parse(text: &str) -> Control {
    let mut fields = Control::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = last.as_ref().and_then(|name| fields.get_mut(name)) {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.insert(name.trim().to_owned(), value.trim().to_owned());
            last = Some(name.trim().to_owned());
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A .deb as dpkg-deb lays it out, with `control` as its control file.
    fn deb(dir: &Path, control: &str, compression: &str) -> PathBuf {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(control.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "./control", control.as_bytes()).unwrap();
        let tar = tar.into_inner().unwrap();
        let member = match compression {
            ".gz" => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).unwrap();
                gz.finish().unwrap()
            }
            ".zst" => zstd::encode_all(&tar[..], 1).unwrap(),
            _ => tar,
        };
        let mut ar = b"!<arch>\n".to_vec();
        let mut add = |name: &str, data: &[u8]| {
            ar.extend(format!("{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", name, 0, 0, 0, 100644, data.len()).as_bytes());
            ar.extend(data);
            if data.len() % 2 == 1 {
                ar.push(b'\n');
            }
        };
        add("debian-binary", b"2.0\n");
        add(&format!("control.tar{compression}"), &member);
        add("data.tar", b"");
        let path = dir.join(format!("p{compression}.deb"));
        std::fs::write(&path, ar).unwrap();
        path
    }

    #[test]
    fn reads_the_control_file_of_each_compression() {
        let dir = tempfile::tempdir().unwrap();
        let text = "Package: probe\nVersion: 1.0\nDepends: lighttpd,\n libc6 (>= 2.36)\nDescription: x\n more\n";
        for compression in ["", ".gz", ".zst"] {
            let control = control(&deb(dir.path(), text, compression)).unwrap();
            assert_eq!(control["Package"], "probe");
            assert_eq!(control["Depends"], "lighttpd,\nlibc6 (>= 2.36)");
        }
    }

    #[test]
    fn a_file_that_is_not_a_deb_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.deb");
        std::fs::write(&path, b"!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n").unwrap();
        let err = control(&path).unwrap_err().to_string();
        assert!(err.contains("x.deb") && err.contains("no control.tar"), "{err}");
        std::fs::write(&path, b"PK\x03\x04").unwrap();
        assert!(control(&path).is_err());
    }
}
