//! Reads a layer's tar stream member by member, folding GNU long names (`L`, `K`) and
//! PAX records (`x`) into the member they describe. The `tar` crate would read those
//! records into memory whatever their declared size; here each size is checked against
//! [`Limits::max_header_record_bytes`] before a byte is read, and every header counts
//! against [`Limits::max_layer_entries`]. Owns parsing only; nothing here touches files.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::limits::Limits;

/// What a tar member says, once its long-name and PAX records are applied.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub path: PathBuf,
    pub link: Option<PathBuf>,
    pub entry_type: tar::EntryType,
    /// Permission bits, setuid, setgid and sticky included.
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub device: (u32, u32),
}

/// Why the stream is refused before any file is written for the member.
#[derive(Debug)]
pub(super) enum Refusal {
    TooManyEntries {
        limit: u64,
    },
    RecordTooLarge {
        kind: &'static str,
        size: u64,
        limit: u64,
    },
    /// Not a tar, or one whose records contradict each other.
    Format(io::Error),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        Self::Format(e)
    }
}

fn malformed(message: &str) -> Refusal {
    Refusal::Format(io::Error::new(io::ErrorKind::InvalidData, message))
}

/// The records met since the last member, waiting for the member they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

/// Iterates the members of a tar whose entries are read raw (`Entries::raw(true)`).
pub(super) struct Members<'a, R: Read> {
    entries: tar::Entries<'a, R>,
    limits: Limits,
    headers: u64,
}

impl<'a, R: Read> Members<'a, R> {
    pub fn new(archive: &'a mut tar::Archive<R>, limits: Limits) -> Result<Self, Refusal> {
        Ok(Self {
            entries: archive.entries()?.raw(true),
            limits,
            headers: 0,
        })
    }

    /// The next member and the reader of its data, or `None` at the end of the tar.
    pub fn next_member(&mut self) -> Result<Option<(Member, tar::Entry<'a, R>)>, Refusal> {
        let mut pending = Pending::default();
        loop {
            let Some(entry) = self.entries.next() else {
                if !pending.is_empty() {
                    return Err(malformed(
                        "the tar ends with a long-name or PAX record that describes no member",
                    ));
                }
                return Ok(None);
            };
            let mut entry = entry?;
            self.headers += 1;
            if self.headers > self.limits.max_layer_entries {
                return Err(Refusal::TooManyEntries {
                    limit: self.limits.max_layer_entries,
                });
            }
            let entry_type = entry.header().entry_type();
            let slot = match entry_type {
                tar::EntryType::GNULongName => Some(("GNU long name", &mut pending.long_name)),
                tar::EntryType::GNULongLink => Some(("GNU long link name", &mut pending.long_link)),
                tar::EntryType::XHeader => Some(("PAX record", &mut pending.pax)),
                // Global PAX records are read past, as the tar crate does, but not
                // without a cap.
                tar::EntryType::XGlobalHeader => {
                    self.record(&mut entry, "PAX global record")?;
                    continue;
                }
                _ => None,
            };
            if let Some((kind, slot)) = slot {
                if slot.is_some() {
                    return Err(malformed(
                        "two records of the same kind describe one member",
                    ));
                }
                *slot = Some(self.record(&mut entry, kind)?);
                continue;
            }
            if entry_type == tar::EntryType::GNUSparse {
                // Go's archive/tar, which builds nearly every image, never writes them;
                // their holes would also unpack to far more than the stream holds.
                return Err(malformed(
                    "it holds a GNU sparse file, which layers do not use",
                ));
            }
            let member = member(&entry, pending)?;
            return Ok(Some((member, entry)));
        }
    }

    /// A long-name or PAX record's bytes, refused before reading when it is too large.
    fn record(
        &self,
        entry: &mut tar::Entry<'a, R>,
        kind: &'static str,
    ) -> Result<Vec<u8>, Refusal> {
        let size = entry.size();
        let limit = self.limits.max_header_record_bytes;
        if size > limit {
            return Err(Refusal::RecordTooLarge { kind, size, limit });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// The member `entry` heads, with the records that preceded it applied.
fn member<R: Read>(entry: &tar::Entry<'_, R>, pending: Pending) -> Result<Member, Refusal> {
    let header = entry.header();
    let mut path = pending
        .long_name
        .map(trim_nul)
        .unwrap_or_else(|| header.path_bytes().into_owned());
    let mut link = pending
        .long_link
        .map(trim_nul)
        .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
    let mut uid = header.uid().ok();
    let mut gid = header.gid().ok();
    let mut mtime = header
        .mtime()
        .ok()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(0);
    if let Some(pax) = &pending.pax {
        for extension in tar::PaxExtensions::new(pax) {
            let extension = extension?;
            let key = extension
                .key()
                .map_err(|_| malformed("a PAX key is not UTF-8"))?;
            let value = extension.value_bytes();
            let number = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.split('.').next())
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| malformed("a PAX number is not a number"))
            };
            match key {
                "path" => path = value.to_vec(),
                "linkpath" => link = Some(value.to_vec()),
                "uid" => uid = u64::try_from(number()?).ok(),
                "gid" => gid = u64::try_from(number()?).ok(),
                "mtime" => mtime = number()?,
                // The raw reader took the data's length from the header: a PAX size that
                // says otherwise would make two readers see two different layers.
                "size" if u64::try_from(number()?).ok() != Some(entry.size()) => {
                    return Err(malformed("its PAX size disagrees with its header"))
                }
                _ => {}
            }
        }
    }
    let path = PathBuf::from(OsStr::from_bytes(&path));
    if path.as_os_str().is_empty() {
        return Err(malformed("a member has an empty name"));
    }
    Ok(Member {
        path,
        link: link
            .filter(|l| !l.is_empty())
            .map(|l| PathBuf::from(OsStr::from_bytes(&l))),
        entry_type: header.entry_type(),
        mode: header.mode()? & 0o7777,
        uid: uid.and_then(|u| u32::try_from(u).ok()),
        gid: gid.and_then(|g| u32::try_from(g).ok()),
        mtime,
        device: (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        ),
    })
}

/// GNU long names end with a NUL (sometimes several).
fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}
