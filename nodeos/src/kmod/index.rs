//! The module index of one kernel release: `modules.alias` and `modules.dep` read from
//! `/lib/modules/<release>`, parsed by `cloudos-kmod-index` (the same parser mkinitramfs
//! uses to choose the image's modules). This module owns reading the files and answering
//! the loader in absolute paths.

use std::path::{Path, PathBuf};

use cloudos_kmod_index::{Aliases, Deps, UnknownModule};

pub use cloudos_kmod_index::normalize;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {0} is not in modules.dep")]
    UnknownModule(String),
}

impl From<UnknownModule> for IndexError {
    fn from(UnknownModule(module): UnknownModule) -> IndexError {
        IndexError::UnknownModule(module)
    }
}

#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Directory that the paths in `modules.dep` are relative to.
    root: PathBuf,
    aliases: Aliases,
    deps: Deps,
}

impl ModuleIndex {
    /// Reads the index under `/lib/modules/<release>`.
    pub fn load(root: &Path) -> Result<ModuleIndex, IndexError> {
        let read = |name: &str| {
            let path = root.join(name);
            std::fs::read_to_string(&path).map_err(|source| IndexError::Read { path, source })
        };
        let mut index = ModuleIndex::parse(&read("modules.alias")?, &read("modules.dep")?);
        index.root = root.to_path_buf();
        Ok(index)
    }

    /// A damaged line of either file is skipped: the other modules still load.
    pub fn parse(alias_text: &str, dep_text: &str) -> ModuleIndex {
        ModuleIndex {
            root: PathBuf::new(),
            aliases: Aliases::parse(alias_text),
            deps: Deps::parse_lenient(dep_text),
        }
    }

    pub fn contains(&self, module: &str) -> bool {
        self.deps.contains(module)
    }

    /// Modules whose alias pattern matches `modalias` (an exact module name
    /// also counts, as `modprobe NAME` does), without duplicates, in file order.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        if self.contains(modalias) {
            found.push(normalize(modalias));
        }
        for module in self.aliases.matching(modalias) {
            if !found.iter().any(|f| f == module) {
                found.push(module.to_string());
            }
        }
        found
    }

    /// `module` and everything it needs, dependencies first, each once.
    pub fn load_order(&self, module: &str) -> Result<Vec<String>, IndexError> {
        Ok(self.deps.load_order(&[module])?)
    }

    /// Absolute path of a module's `.ko` file.
    pub fn path_of(&self, module: &str) -> Result<PathBuf, IndexError> {
        let path = self
            .deps
            .path(module)
            .ok_or_else(|| IndexError::UnknownModule(module.to_string()))?;
        Ok(self.root.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/usb/storage/usb-storage.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
";
    const ALIAS: &str = "\
alias virtio:d00000001v* virtio_net
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias fs-ext4 ext4
alias ext4 ext4
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(ALIAS, DEP)
    }

    #[test]
    fn a_module_name_is_its_own_modalias() {
        let cases: &[(&str, &[&str])] = &[
            ("virtio:d00000001v00001AF4", &["virtio_net"]),
            ("fs-ext4", &["ext4"]),
            ("ext4", &["ext4"]),
            ("usb-storage", &["usb_storage"]),
            ("e1000", &[]),
        ];
        let index = index();
        for (modalias, expected) in cases {
            assert_eq!(index.lookup(modalias), *expected, "{modalias}");
        }
    }

    #[test]
    fn dependencies_come_first_and_unknown_modules_error() {
        let index = index();
        assert_eq!(
            index.load_order("virtio_net").unwrap(),
            ["failover", "net_failover", "virtio_net"]
        );
        assert!(
            matches!(index.load_order("nope"), Err(IndexError::UnknownModule(m)) if m == "nope")
        );
    }

    #[test]
    fn paths_are_under_the_root() {
        let mut index = index();
        index.root = PathBuf::from("/lib/modules/6.1.0-56-amd64");
        assert_eq!(
            index.path_of("ext4").unwrap(),
            Path::new("/lib/modules/6.1.0-56-amd64/kernel/fs/ext4/ext4.ko")
        );
        assert!(
            matches!(index.path_of("e-1000"), Err(IndexError::UnknownModule(m)) if m == "e-1000")
        );
    }
}
