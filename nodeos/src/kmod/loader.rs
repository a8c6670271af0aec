//! Loads modules with `finit_module(2)`, dependencies first, each once.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::kmod::{finit_module, init_module, ModuleInitFlags};

use super::index::{normalize, IndexError, ModuleIndex};

/// The suffix of a module packed as an LZ4 frame (named by mkinitramfs).
const LZ4_SUFFIX: &str = cloudos_kmod_index::PACKED_SUFFIX;

/// Hands one module file to the kernel: a plain `.ko` by its file
/// descriptor, an LZ4-packed one unpacked in memory first (this kernel
/// cannot unpack modules itself).
fn load_file(path: &Path) -> Result<nix::Result<()>, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    if !path.to_string_lossy().ends_with(LZ4_SUFFIX) {
        return Ok(finit_module(
            &file,
            &CString::default(),
            ModuleInitFlags::empty(),
        ));
    }
    let image = unpack_lz4(file).map_err(read_error)?;
    Ok(init_module(&image, &CString::default()))
}

/// The bytes of an LZ4-framed file.
fn unpack_lz4(packed: impl Read) -> std::io::Result<Vec<u8>> {
    let mut image = Vec::new();
    lz4_flex::frame::FrameDecoder::new(packed).read_to_end(&mut image)?;
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
    fn lz4_packed_modules_unpack_to_their_bytes_and_damage_is_an_error() {
        use std::io::Write;
        let module = b"\x7fELF a module \0\0\0\0\0\0\0\0".repeat(100);
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        encoder.write_all(&module).unwrap();
        let packed = encoder.finish().unwrap();
        assert_eq!(unpack_lz4(&packed[..]).unwrap(), module);
        assert!(
            unpack_lz4(&packed[..packed.len() / 2]).is_err(),
            "truncated"
        );
        assert!(unpack_lz4(&module[..]).is_err(), "not LZ4");
    }
}
