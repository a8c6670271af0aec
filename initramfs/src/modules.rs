//! Kernel module selection: the dependency closure from `modules.dep`, the
//! `modules.dep`/`modules.alias`/`modules.softdep` files filtered to the chosen modules,
//! and the modules packed as LZ4 frames. Reading the index is `cloudos-kmod-index`'s, the
//! parser nodeos loads the modules with.

use std::collections::{BTreeMap, HashSet};

use cloudos_kmod_index::alias::alias_line;
use cloudos_kmod_index::{module_name, normalize, packed_path, Aliases, Deps, UnknownModule};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("module {name:?} is not in modules.dep{hint}")]
    Unknown { name: String, hint: String },
    #[error("module {0:?} is built into the kernel: remove it from the module list")]
    BuiltIn(String),
    #[error("modules.dep names {0:?} as a dependency but has no line for it")]
    MissingDependency(String),
}

/// Every module in `wanted` plus everything it needs, dependencies before the modules
/// that need them (a valid `insmod` order).
///
/// `builtin` holds the canonical names of built-in modules (from `modules.builtin`) and
/// `aliases` the text of `modules.alias`; both only shape error messages.
pub fn closure(
    deps: &Deps,
    wanted: &[String],
    builtin: &HashSet<String>,
    aliases: &str,
) -> Result<Vec<String>, ModuleError> {
    for w in wanted {
        let name = normalize(w);
        if deps.contains(&name) {
            continue;
        }
        if builtin.contains(&name) {
            return Err(ModuleError::BuiltIn(w.clone()));
        }
        let hint = Aliases::parse(aliases)
            .target_of(&name)
            .map(|m| format!(" (it is an alias of {m:?})"))
            .unwrap_or_default();
        return Err(ModuleError::Unknown {
            name: w.clone(),
            hint,
        });
    }
    // Every wanted module is known: what is missing now is a dependency.
    deps.load_order(wanted)
        .map_err(|UnknownModule(m)| ModuleError::MissingDependency(m))
}

/// Reads a module list: one name a line, `#` starts a comment.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn keep_lines(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || keep(t) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `modules.dep` lines of the included modules, in their original order.
pub fn filter_dep(text: &str, included: &HashSet<String>) -> String {
    keep_lines(text, |l| {
        l.split_once(':')
            .is_some_and(|(p, _)| included.contains(&module_name(p)))
    })
}

/// `modules.alias` (`alias PATTERN MODULE`) lines whose module is included.
pub fn filter_alias(text: &str, included: &HashSet<String>) -> String {
    keep_lines(text, |l| {
        alias_line(l).is_some_and(|(_, m)| included.contains(&normalize(m)))
    })
}

/// `modules.softdep` (`softdep MODULE pre: … post: …`) lines whose module is included.
pub fn filter_softdep(text: &str, included: &HashSet<String>) -> String {
    keep_lines(text, |l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 2 && f[0] == "softdep" && included.contains(&normalize(f[1]))
    })
}

/// A module file as the initramfs carries it: one zstd frame (level 19, with
/// its checksum). The kernel unpacks the whole initramfs before it runs
/// `/init`, at a cost that grows with its unpacked size, and most modules are
/// never loaded on a given machine (the lists name every family of NIC and
/// controller a machine might have); packed one by one the x86_64 set takes
/// 7.6 MB instead of 35 MB (LZ4 frames: 12 MB), and `nodeos` unpacks the few
/// a machine's devices ask for. The Debian kernel cannot unpack modules
/// itself (no MODULE_DECOMPRESS).
pub fn compress_module(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), MODULE_ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(bytes.len() as u64))?;
    std::io::Write::write_all(&mut encoder, bytes)?;
    encoder.finish()
}

/// zstd's strongest level short of `--ultra`: packing is done once, at build
/// time, and decoding speed barely depends on the level.
const MODULE_ZSTD_LEVEL: i32 = 19;

/// `modules.dep` with every `.ko` path renamed by [`packed_path`].
pub fn compressed_dep(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some((module, deps)) = line.split_once(':') else {
                return format!("{line}\n");
            };
            let deps: Vec<String> = deps.split_whitespace().map(packed_path).collect();
            if deps.is_empty() {
                format!("{}:\n", packed_path(module))
            } else {
                format!("{}: {}\n", packed_path(module), deps.join(" "))
            }
        })
        .collect()
}

/// name -> path for the modules of `order` (for copying).
pub fn paths<'a>(deps: &'a Deps, order: &[String]) -> BTreeMap<String, &'a str> {
    order
        .iter()
        .filter_map(|n| deps.path(n).map(|p| (n.clone(), p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko:
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/x/a.ko: kernel/x/b.ko
kernel/x/b.ko: kernel/x/a.ko
";

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn closure(want: &[&str]) -> Result<Vec<String>, ModuleError> {
        let d = Deps::parse(DEP).unwrap();
        let w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        super::closure(&d, &w, &set(&["af_packet"]), "alias iso9660 isofs\n")
    }

    #[test]
    fn closure_puts_dependencies_first() {
        assert_eq!(
            closure(&["virtio_net"]).unwrap(),
            ["failover", "net_failover", "virtio_net"]
        );
        // A module asked for after its dependents is not repeated.
        assert_eq!(
            closure(&["virtio_net", "failover", "virtio-rng"]).unwrap(),
            ["failover", "net_failover", "virtio_net", "virtio_rng"]
        );
    }

    #[test]
    fn closure_is_cycle_safe() {
        let c = closure(&["a"]).unwrap();
        assert_eq!(c, ["b", "a"]);
    }

    #[test]
    fn dash_and_underscore_are_the_same_name() {
        assert_eq!(
            closure(&["usb-storage"]).unwrap(),
            ["scsi_common", "usb_storage"]
        );
        assert_eq!(closure(&["virtio-rng"]).unwrap(), ["virtio_rng"]);
    }

    #[test]
    fn unknown_module_is_an_error_naming_it() {
        let e = closure(&["virtio_net", "no_such_mod"]).unwrap_err();
        assert!(matches!(&e, ModuleError::Unknown { name, .. } if name == "no_such_mod"));
        assert!(e.to_string().contains("no_such_mod"));
        let e = closure(&["iso9660"]).unwrap_err();
        assert!(e.to_string().contains("isofs"), "{e}");
        assert_eq!(
            closure(&["af_packet"]).unwrap_err(),
            ModuleError::BuiltIn("af_packet".into())
        );
        let dangling = Deps::parse("kernel/a.ko: kernel/gone.ko\n").unwrap();
        assert_eq!(
            super::closure(&dangling, &["a".into()], &set(&[]), ""),
            Err(ModuleError::MissingDependency("gone".into()))
        );
    }

    #[test]
    fn filters_keep_only_included_modules_in_order() {
        let inc = set(&["virtio_net", "failover", "net_failover", "virtio_rng"]);
        let alias = "# Aliases extracted from modules themselves.\n\
alias virtio:d00000001v* virtio_net\n\
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
alias virtio:d00000004v* virtio_rng\n\
alias net-pf-17 af_packet\n";
        assert_eq!(
            filter_alias(alias, &inc),
            "# Aliases extracted from modules themselves.\n\
alias virtio:d00000001v* virtio_net\n\
alias virtio:d00000004v* virtio_rng\n"
        );
        let dep = filter_dep(DEP, &inc);
        assert_eq!(
            dep,
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/char/hw_random/virtio-rng.ko:\n"
        );
        let soft =
            "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c\nsoftdep virtio_net pre: x\n";
        assert_eq!(
            filter_softdep(soft, &inc),
            "# Soft dependencies\nsoftdep virtio_net pre: x\n"
        );
    }

    #[test]
    fn modules_are_packed_as_zstd_frames_under_renamed_paths() {
        let module = b"\x7fELF module bytes \0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".repeat(64);
        let packed = compress_module(&module).unwrap();
        assert!(packed.len() < module.len() / 4, "{} bytes", packed.len());
        assert_eq!(&packed[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
        let unpacked = zstd::stream::decode_all(&packed[..]).unwrap();
        assert_eq!(unpacked, module);
        assert_eq!(compress_module(&module).unwrap(), packed, "deterministic");

        assert_eq!(
            compressed_dep(
                "kernel/a/virtio_net.ko: kernel/b/failover.ko kernel/c/x.ko\nkernel/b/failover.ko:\nkernel/d/old.ko.xz:\n"
            ),
            "kernel/a/virtio_net.ko.zst: kernel/b/failover.ko.zst kernel/c/x.ko.zst\n\
             kernel/b/failover.ko.zst:\n\
             kernel/d/old.ko.xz:\n"
        );
    }

    #[test]
    fn list_parsing() {
        assert_eq!(
            parse_list("# c\nvirtio_net  # net\n\n  e1000\n"),
            ["virtio_net", "e1000"]
        );
    }
}
