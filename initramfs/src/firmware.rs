//! The firmware the image's modules ask for.
//!
//! A driver names the firmware files it may request in its `.modinfo`
//! section (`firmware=rtl_nic/rtl8168h-2.fw`, what `modinfo -F firmware`
//! prints). The build copies exactly those files from the pinned firmware
//! packages into `/lib/firmware`, where the kernel's own loader finds them
//! when the driver asks (no user-space helper): the packages are a pool, and
//! a file no chosen driver names never reaches the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

/// Where the kernel looks for firmware, and where the image puts it.
pub const FIRMWARE_DIR: &str = "lib/firmware";

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("{module}: not a kernel module (ELF): {source}")]
    NotElf {
        module: String,
        source: object::Error,
    },
    #[error("{module}: firmware name {name:?} leaves {FIRMWARE_DIR}")]
    BadName { module: String, name: String },
    #[error("reading firmware {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The firmware names in a module's `.modinfo` section, in the module's order.
pub fn requested(module: &str, elf: &[u8]) -> Result<Vec<String>, FirmwareError> {
    let file = object::File::parse(elf).map_err(|source| FirmwareError::NotElf {
        module: module.to_string(),
        source,
    })?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data().map_err(|source| FirmwareError::NotElf {
        module: module.to_string(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in data.split(|b| *b == 0) {
        let Some(name) = entry.strip_prefix(b"firmware=") else {
            continue;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        // The name becomes a path in the image: keep it under lib/firmware.
        if name.is_empty()
            || name.starts_with('/')
            || name.split('/').any(|c| c == ".." || c.is_empty())
        {
            return Err(FirmwareError::BadName {
                module: module.to_string(),
                name,
            });
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// What was found for the requested names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// name -> bytes, for every name some root holds.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Names no root holds (Debian does not ship every version a driver
    /// lists; the driver falls back to another or runs without).
    pub missing: Vec<String>,
}

/// Looks each name up in `roots` (each holding `lib/firmware/…`, an unpacked
/// firmware package; the first that has it wins). A symbolic link in a package
/// (`intel/ice/ddp/ice.pkg` -> `ice-1.3.30.0.pkg`) is copied as the file it
/// points to, under the requested name.
pub fn find(roots: &[PathBuf], names: &[String]) -> Result<Found, FirmwareError> {
    let mut found = Found::default();
    for name in names {
        if found.files.contains_key(name) || found.missing.contains(name) {
            continue;
        }
        match roots
            .iter()
            .map(|r| r.join(FIRMWARE_DIR).join(name))
            .find(|p| p.is_file())
        {
            Some(path) => {
                let bytes = read(&path)?;
                found.files.insert(name.clone(), bytes);
            }
            None => found.missing.push(name.clone()),
        }
    }
    Ok(found)
}

fn read(path: &Path) -> Result<Vec<u8>, FirmwareError> {
    std::fs::read(path).map_err(|source| FirmwareError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian relocatable with one `.modinfo` section,
    /// as a module has: header, the section's bytes, the section-name table,
    /// then three section headers (null, .modinfo, .shstrtab).
    fn module_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        const EHDR: usize = 64;
        const SHDR: usize = 64;
        let names = b"\0.modinfo\0.shstrtab\0";
        let modinfo_at = EHDR;
        let names_at = modinfo_at + modinfo.len();
        // Section headers are 8-byte aligned.
        let shoff = (names_at + names.len()).next_multiple_of(8);
        let mut elf = Vec::new();
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01");
        elf.resize(16, 0);
        elf.extend_from_slice(&1u16.to_le_bytes()); // e_type: ET_REL
        elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: x86_64
        elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
        elf.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        elf.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
        elf.extend_from_slice(&(shoff as u64).to_le_bytes()); // e_shoff
        elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
        elf.extend_from_slice(&0u16.to_le_bytes()); // e_phentsize
        elf.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
        elf.extend_from_slice(&(SHDR as u16).to_le_bytes());
        elf.extend_from_slice(&3u16.to_le_bytes()); // e_shnum
        elf.extend_from_slice(&2u16.to_le_bytes()); // e_shstrndx
        elf.extend_from_slice(modinfo);
        elf.extend_from_slice(names);
        elf.resize(shoff, 0);
        let mut section = |name: u32, kind: u32, offset: usize, size: usize| {
            elf.extend_from_slice(&name.to_le_bytes());
            elf.extend_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&0u64.to_le_bytes()); // flags
            elf.extend_from_slice(&0u64.to_le_bytes()); // addr
            elf.extend_from_slice(&(offset as u64).to_le_bytes());
            elf.extend_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&0u32.to_le_bytes()); // link
            elf.extend_from_slice(&0u32.to_le_bytes()); // info
            elf.extend_from_slice(&1u64.to_le_bytes()); // addralign
            elf.extend_from_slice(&0u64.to_le_bytes()); // entsize
        };
        section(0, 0, 0, 0);
        section(1, 1, modinfo_at, modinfo.len()); // SHT_PROGBITS
        section(10, 3, names_at, names.len()); // SHT_STRTAB
        elf
    }

    #[test]
    fn firmware_names_come_from_modinfo() {
        let elf = module_with_modinfo(
            b"license=GPL\0firmware=rtl_nic/rtl8168h-2.fw\0alias=pci:v000010ECd00008168sv*\0\
              firmware=rtl_nic/rtl8125a-3.fw\0firmware=rtl_nic/rtl8168h-2.fw\0",
        );
        assert_eq!(
            requested("r8169", &elf).unwrap(),
            ["rtl_nic/rtl8168h-2.fw", "rtl_nic/rtl8125a-3.fw"]
        );
        let none = module_with_modinfo(b"license=GPL\0");
        assert!(requested("e1000", &none).unwrap().is_empty());
        assert!(matches!(
            requested("x", b"not an elf"),
            Err(FirmwareError::NotElf { .. })
        ));
    }

    #[test]
    fn a_name_that_leaves_the_firmware_directory_is_refused() {
        for bad in ["../../etc/passwd", "/etc/shadow", "a//b", "a/../../b"] {
            let elf = module_with_modinfo(format!("firmware={bad}\0").as_bytes());
            assert!(
                matches!(requested("evil", &elf), Err(FirmwareError::BadName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn files_are_found_in_the_first_root_that_has_them_and_links_are_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(a.join("lib/firmware/rtl_nic")).unwrap();
        std::fs::create_dir_all(b.join("lib/firmware/intel/ice/ddp")).unwrap();
        std::fs::write(a.join("lib/firmware/rtl_nic/x.fw"), b"realtek").unwrap();
        std::fs::write(b.join("lib/firmware/intel/ice/ddp/ice-1.3.pkg"), b"ddp").unwrap();
        std::os::unix::fs::symlink("ice-1.3.pkg", b.join("lib/firmware/intel/ice/ddp/ice.pkg"))
            .unwrap();
        let names: Vec<String> = ["rtl_nic/x.fw", "intel/ice/ddp/ice.pkg", "bnx2/old.fw"]
            .map(String::from)
            .to_vec();
        let found = find(&[a, b], &names).unwrap();
        assert_eq!(found.files["rtl_nic/x.fw"], b"realtek");
        assert_eq!(found.files["intel/ice/ddp/ice.pkg"], b"ddp");
        assert_eq!(found.missing, ["bnx2/old.fw"]);
    }
}
