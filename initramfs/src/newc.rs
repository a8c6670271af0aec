//! A small writer for the cpio "newc" format (the one the kernel unpacks as an initramfs).
//!
//! Each entry: a 110-byte ASCII header (`070701` + 13 fields of 8 hex digits), the
//! NUL-terminated name padded so that header + name is a multiple of 4, then the
//! data padded to a multiple of 4. The archive ends with an entry named `TRAILER!!!`.

use std::io::{self, Write};

pub const MAGIC: &str = "070701";
pub const HEADER_LEN: usize = 110;
pub const TRAILER: &str = "TRAILER!!!";

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;

/// The header fields of one entry (uid/gid are always 0, `check` always 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// Streams newc entries into `W`, keeping track of the offset for padding.
pub struct NewcWriter<W: Write> {
    inner: W,
    offset: u64,
}

fn pad_len(offset: u64) -> usize {
    ((4 - (offset % 4)) % 4) as usize
}

impl<W: Write> NewcWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, offset: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = pad_len(self.offset);
        self.put(&[0u8; 3][..n])
    }

    /// Writes one entry. `name` has no leading `/` (e.g. `bin/nodeos`).
    pub fn entry(&mut self, h: &Header, name: &str, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file larger than 4 GiB"))?;
        let namesize = name.len() as u32 + 1;
        let fields = [
            h.ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            h.mtime,
            size,
            0, // devmajor
            0, // devminor
            h.rdev_major,
            h.rdev_minor,
            namesize,
            0, // check
        ];
        let mut header = String::with_capacity(HEADER_LEN);
        header.push_str(MAGIC);
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        debug_assert_eq!(header.len(), HEADER_LEN);
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let h = Header {
            nlink: 1,
            ..Header::default()
        };
        self.entry(&h, TRAILER, &[])?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(buf: &[u8], at: usize, idx: usize) -> u32 {
        let s = std::str::from_utf8(&buf[at + 6 + idx * 8..at + 6 + idx * 8 + 8]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn header_layout_and_padding() {
        let mut w = NewcWriter::new(Vec::new());
        let h = Header {
            ino: 7,
            mode: S_IFREG | 0o755,
            nlink: 1,
            mtime: 0x1234,
            ..Header::default()
        };
        w.entry(&h, "init", b"hello").unwrap();
        let buf = w.finish().unwrap();

        assert_eq!(&buf[..6], MAGIC.as_bytes());
        assert_eq!(field(&buf, 0, 0), 7); // ino
        assert_eq!(field(&buf, 0, 1), S_IFREG | 0o755);
        assert_eq!(field(&buf, 0, 2), 0); // uid
        assert_eq!(field(&buf, 0, 3), 0); // gid
        assert_eq!(field(&buf, 0, 5), 0x1234); // mtime
        assert_eq!(field(&buf, 0, 6), 5); // filesize
        assert_eq!(field(&buf, 0, 11), 5); // namesize incl. NUL
                                           // Header is uppercase-free lowercase hex digits only.
        assert!(buf[6..HEADER_LEN].iter().all(|b| b.is_ascii_hexdigit()));
        // 110 + 5 = 115 -> padded to 116; data 5 -> padded to 8.
        assert_eq!(&buf[110..115], b"init\0");
        assert_eq!(buf[115], 0);
        assert_eq!(&buf[116..121], b"hello");
        assert_eq!(&buf[121..124], &[0, 0, 0]);
        // Trailer follows at 124.
        assert_eq!(&buf[124..130], MAGIC.as_bytes());
        assert_eq!(field(&buf, 124, 4), 1);
        assert_eq!(&buf[124 + 110..124 + 110 + 11], b"TRAILER!!!\0");
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(buf.len(), 124 + 110 + 11 + 3);
    }

    #[test]
    fn device_node_fields() {
        let mut w = NewcWriter::new(Vec::new());
        let h = Header {
            ino: 1,
            mode: S_IFCHR | 0o600,
            nlink: 1,
            rdev_major: 5,
            rdev_minor: 1,
            ..Header::default()
        };
        w.entry(&h, "dev/console", &[]).unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(field(&buf, 0, 9), 5);
        assert_eq!(field(&buf, 0, 10), 1);
        assert_eq!(field(&buf, 0, 6), 0);
        // 110 + 12 = 122 -> 124
        assert_eq!(&buf[124..130], MAGIC.as_bytes());
    }
}
