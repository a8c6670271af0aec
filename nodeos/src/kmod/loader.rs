//! Loads modules with `finit_module(2)`, dependencies first, each once.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::kmod::{finit_module, init_module, ModuleInitFlags};

use super::index::{normalize, IndexError, ModuleIndex};

/// The suffix of a module packed as a zstd frame (named by mkinitramfs).
const PACKED_SUFFIX: &str = cloudos_kmod_index::PACKED_SUFFIX;

/// Hands one module file to the kernel: a plain `.ko` by its file
/// descriptor, a packed one unpacked in memory first (this kernel cannot
/// unpack modules itself).
fn load_file(path: &Path) -> Result<nix::Result<()>, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    if !path.to_string_lossy().ends_with(PACKED_SUFFIX) {
        return Ok(finit_module(
            &file,
            &CString::default(),
            ModuleInitFlags::empty(),
        ));
    }
    let image = unpack(file).map_err(read_error)?;
    Ok(init_module(&image, &CString::default()))
}

/// The bytes of a zstd-framed file. The decoder is the pure-Rust one the
/// image unpacker already carries, so packing modules adds no code. The frame
/// carries its checksum (mkinitramfs writes one), which ruzstd computes but
/// leaves to the caller to compare: a damaged module is an error, never a
/// bad load.
fn unpack(packed: impl Read) -> std::io::Result<Vec<u8>> {
    let mut decoder =
        ruzstd::decoding::StreamingDecoder::new(packed).map_err(std::io::Error::other)?;
    let mut image = Vec::new();
    decoder.read_to_end(&mut image)?;
    let frame = decoder.into_frame_decoder();
    if let (Some(stored), Some(computed)) = (
        frame.get_checksum_from_data(),
        frame.get_calculated_checksum(),
    ) {
        if stored != computed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "module checksum mismatch",
            ));
        }
    }
    Ok(image)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel refused module {module}: {errno}")]
    Refused { module: String, errno: Errno },
}

/// Remembers what is loaded so that a device seen twice costs nothing.
pub struct Loader {
    index: ModuleIndex,
    loaded: Mutex<HashSet<String>>,
}

impl Loader {
    pub fn new(index: ModuleIndex) -> Loader {
        // Modules loaded before us (none in the appliance; some on a host).
        let loaded = std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(normalize))
            .collect();
        Loader {
            index,
            loaded: Mutex::new(loaded),
        }
    }

    pub fn index(&self) -> &ModuleIndex {
        &self.index
    }

    /// Loads every module matching `modalias`; returns the names newly loaded.
    /// A device with no matching module is not an error: most have none.
    pub fn load_for_alias(&self, modalias: &str) -> Result<Vec<String>, LoadError> {
        let mut newly = Vec::new();
        for module in self.index.lookup(modalias) {
            newly.extend(self.load(&module)?);
        }
        Ok(newly)
    }

    /// Loads `module` and its dependencies; returns the names newly loaded.
    pub fn load(&self, module: &str) -> Result<Vec<String>, LoadError> {
        let mut newly = Vec::new();
        for name in self.index.load_order(module)? {
            if self.is_loaded(&name) {
                continue;
            }
            let path = self.index.path_of(&name)?;
            match load_file(&path)? {
                Ok(()) => {
                    self.mark_loaded(&name);
                    newly.push(name);
                }
                // Loaded meanwhile, by another thread of ours (coldplug loads in parallel)
                // or another loader process: not ours to report.
                Err(Errno::EEXIST) => self.mark_loaded(&name),
                Err(errno) => {
                    return Err(LoadError::Refused {
                        module: name,
                        errno,
                    })
                }
            }
        }
        Ok(newly)
    }

    fn is_loaded(&self, name: &str) -> bool {
        self.loaded
            .lock()
            .map(|l| l.contains(name))
            .unwrap_or(false)
    }

    fn mark_loaded(&self, name: &str) {
        if let Ok(mut l) = self.loaded.lock() {
            l.insert(name.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_modules_unpack_to_their_bytes_and_damage_is_an_error() {
        let module = b"\x7fELF a module \0\0\0\0\0\0\0\0".repeat(100);
        let packed = ruzstd::encoding::compress_to_vec(
            &module[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(unpack(&packed[..]).unwrap(), module);
        assert!(unpack(&packed[..packed.len() / 2]).is_err(), "truncated");
        assert!(unpack(&module[..]).is_err(), "not zstd");

        // The frame ends in its checksum (ruzstd's encoder writes one, as
        // mkinitramfs's does): a damaged one is refused.
        let mut damaged = packed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(unpack(&damaged[..]).is_err(), "checksum mismatch");
    }
}
