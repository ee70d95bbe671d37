//! Extension headers: the PAX records and GNU long names that describe the entry after
//! them. racker reads them itself, by each record's length as POSIX says, instead of
//! through the tar crate, whose parser splits records on newlines: a binary xattr value
//! holding a `\n` (journald's `user.crtime_usec`, some `security.capability`) made a
//! layer unreadable, and a value holding `\n22 linkpath=…\n` could smuggle a record
//! that other readers (Go's `archive/tar`, so docker) never see.

use std::io::Read;

/// The most bytes one extension header may hold: real ones hold a few paths and xattrs.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// One PAX record: its key and its value, bytes as they stand in the archive.
type Record = (Vec<u8>, Vec<u8>);

/// Why extension headers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error("malformed pax record at byte {0}")]
    Malformed(usize),
    #[error("an extension header of {0} bytes (at most {MAX_HEADER_BYTES})")]
    TooLarge(u64),
    #[error("two {0} headers describe one entry")]
    Twice(&'static str),
    #[error("extension headers at the end of the archive describe no entry")]
    Dangling,
    #[error("a pax size record ({0}) that differs from the header's size is not supported")]
    Size(u64),
}

/// What the extension headers before one entry say about it.
#[derive(Debug, Default)]
pub struct Extensions {
    /// `(key, value)` of each PAX record, in order; a later record wins.
    records: Vec<Record>,
    gnu_long_name: Option<Vec<u8>>,
    gnu_long_link: Option<Vec<u8>>,
    pax_seen: bool,
}

impl Extensions {
    /// True when no header has been read since the last entry.
    pub fn is_empty(&self) -> bool {
        !self.pax_seen && self.gnu_long_name.is_none() && self.gnu_long_link.is_none()
    }

    /// Reads a PAX extended header (`x`) for the next entry.
    pub fn read_pax(&mut self, data: impl Read, size: u64) -> Result<(), ReadError> {
        if self.pax_seen {
            return Err(ExtensionError::Twice("pax").into());
        }
        self.pax_seen = true;
        self.records = parse_records(&read_bounded(data, size)?)?;
        Ok(())
    }

    /// Reads a GNU long name (`L`) or long link name (`K`) header for the next entry.
    pub fn read_gnu(&mut self, data: impl Read, size: u64, link: bool) -> Result<(), ReadError> {
        let slot = if link { &mut self.gnu_long_link } else { &mut self.gnu_long_name };
        if slot.is_some() {
            return Err(ExtensionError::Twice("GNU long name").into());
        }
        let mut name = read_bounded(data, size)?;
        while name.last() == Some(&0) {
            name.pop();
        }
        *slot = Some(name);
        Ok(())
    }

    /// The entry's path: a PAX `path` record, else a GNU long name, else the header's.
    pub fn path<'a>(&'a self, header: &'a [u8]) -> &'a [u8] {
        self.record(b"path").or(self.gnu_long_name.as_deref()).unwrap_or(header)
    }

    /// The entry's link target, chosen as [`Extensions::path`] chooses the path.
    pub fn link<'a>(&'a self, header: Option<&'a [u8]>) -> Option<&'a [u8]> {
        self.record(b"linkpath").or(self.gnu_long_link.as_deref()).or(header)
    }

    /// Checks that a PAX `size` record, if any, agrees with the header: the tar crate
    /// reads the header's size in raw mode, and an entry read at another size than the
    /// one other readers use would desynchronise the rest of the archive.
    pub fn check_size(&self, header_size: u64) -> Result<(), ExtensionError> {
        match self.record(b"size").map(|v| std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok())) {
            None => Ok(()),
            Some(Some(size)) if size == header_size => Ok(()),
            Some(size) => Err(ExtensionError::Size(size.unwrap_or(0))),
        }
    }

    /// The PAX records, in order.
    pub fn records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.records.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    fn record(&self, key: &[u8]) -> Option<&[u8]> {
        self.records.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

/// Reading an extension header failed: its bytes, or what they say.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Refused(#[from] ExtensionError),
}

fn read_bounded(data: impl Read, size: u64) -> Result<Vec<u8>, ReadError> {
    if size > MAX_HEADER_BYTES {
        return Err(ExtensionError::TooLarge(size).into());
    }
    let mut buf = Vec::with_capacity(size as usize);
    data.take(size).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Parses `LEN KEY=VALUE\n` records, each `LEN` bytes long in all, so that values may
/// hold any byte, newlines included.
fn parse_records(mut data: &[u8]) -> Result<Vec<Record>, ExtensionError> {
    let total = data.len();
    let mut records = Vec::new();
    while !data.is_empty() {
        let at = total - data.len();
        let malformed = || ExtensionError::Malformed(at);
        let space = data.iter().take(20).position(|&b| b == b' ').ok_or_else(malformed)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed());
        }
        let body = &data[space + 1..len - 1];
        let eq = body.iter().position(|&b| b == b'=').filter(|&eq| eq > 0).ok_or_else(malformed)?;
        records.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 2;
        while format!("{len} ").len() + body.len() != len {
            len += 1;
        }
        [format!("{len} ").into_bytes(), body].concat()
    }

    fn pax(data: &[u8]) -> Result<Extensions, ReadError> {
        let mut ext = Extensions::default();
        ext.read_pax(data, data.len() as u64)?;
        Ok(ext)
    }

    #[test]
    fn values_may_hold_newlines_and_any_byte() {
        let xattr = [1u8, 0, 0, 2, 2, 0, b'\n', 0, 0xff];
        let data = [record("SCHILY.xattr.security.capability", &xattr), record("path", b"a\nb")].concat();
        let ext = pax(&data).unwrap();
        let records: Vec<_> = ext.records().collect();
        assert_eq!(records, vec![(&b"SCHILY.xattr.security.capability"[..], &xattr[..]), (&b"path"[..], &b"a\nb"[..])]);
        assert_eq!(ext.path(b"short"), b"a\nb");
    }

    #[test]
    fn a_record_hidden_in_a_value_is_not_read() {
        let data = record("comment", b"x\n22 linkpath=/etc/evil\n");
        let ext = pax(&data).unwrap();
        assert_eq!(ext.link(Some(b"harmless")), Some(&b"harmless"[..]));
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in [&b"5 a=b\n"[..], b"99 path=x\n", b"x path=y\n", b"8 =abc\n", b"7 path\n", b"12 path=abc\n\n"] {
            assert!(matches!(pax(bad), Err(ReadError::Refused(ExtensionError::Malformed(_)))), "{bad:?}");
        }
    }

    #[test]
    fn headers_are_bounded_and_single() {
        let mut ext = Extensions::default();
        assert!(matches!(
            ext.read_pax(&b""[..], MAX_HEADER_BYTES + 1),
            Err(ReadError::Refused(ExtensionError::TooLarge(_)))
        ));
        let mut ext = Extensions::default();
        ext.read_gnu(&b"long/name\0\0"[..], 11, false).unwrap();
        assert_eq!(ext.path(b"trunc"), b"long/name");
        assert!(matches!(ext.read_gnu(&b"x"[..], 1, false), Err(ReadError::Refused(ExtensionError::Twice(_)))));
    }

    #[test]
    fn pax_wins_over_gnu_and_size_must_agree() {
        let mut ext = pax(&[record("path", b"from-pax"), record("size", b"12")].concat()).unwrap();
        ext.read_gnu(&b"from-gnu"[..], 8, false).unwrap();
        assert_eq!(ext.path(b"header"), b"from-pax");
        assert!(ext.check_size(12).is_ok());
        assert_eq!(ext.check_size(0), Err(ExtensionError::Size(12)));
    }
}
