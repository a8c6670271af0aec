//! Loads modules with `finit_module(2)`, dependencies first, each once.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use super::index::{normalize, IndexError, ModuleIndex};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cannot open {path}: {source}")]
    Open {
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
            let file = std::fs::File::open(&path).map_err(|source| LoadError::Open {
                path: path.clone(),
                source,
            })?;
            match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
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
