//! Module names: the kernel writes them with `-` or `_` interchangeably and compares them
//! with `-` folded to `_`; a `.ko` file's module is its file stem, folded the same way.

use std::collections::HashSet;

/// The canonical form of a module name (`usb-storage` -> `usb_storage`). Surrounding
/// whitespace is not part of a name (lists written by people carry some).
pub fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// The module of a `.ko` path, canonical: the file stem up to `.ko`
/// (`kernel/drivers/char/hw_random/virtio-rng.ko` -> `virtio_rng`; compressed files such as
/// `ext4.ko.xz` or `ext4.ko.zst` are `ext4`).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.find(".ko").map_or(file, |i| &file[..i]);
    normalize(stem)
}

/// The canonical names of the modules built into the kernel (`modules.builtin`: one
/// `.ko` path a line).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let cases = [
            ("kernel/drivers/char/hw_random/virtio-rng.ko", "virtio_rng"),
            ("kernel/fs/ext4/ext4.ko.xz", "ext4"),
            ("kernel/fs/ext4/ext4.ko.zst", "ext4"),
            ("kernel/drivers/net/virtio_net.ko", "virtio_net"),
            ("ext4.ko", "ext4"),
            ("kernel/odd/no-suffix", "no_suffix"),
        ];
        for (path, want) in cases {
            assert_eq!(module_name(path), want, "{path}");
        }
        assert_eq!(normalize("usb-storage"), "usb_storage");
        assert_eq!(normalize(" virtio-net\n"), "virtio_net");
        assert_eq!(normalize("ext4"), "ext4");
    }

    #[test]
    fn builtin_modules() {
        let builtin = parse_builtin("kernel/net/packet/af_packet.ko\n\n  kernel/fs/fat/vfat.ko\n");
        assert_eq!(builtin, ["af_packet", "vfat"].map(String::from).into());
    }
}
