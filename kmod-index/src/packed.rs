//! How a module file is named once `mkinitramfs` packed it as one zstd frame, which is how
//! `nodeos` knows to unpack it before handing it to the kernel (the Debian kernel cannot
//! unpack modules itself). The contract between the two is this suffix.

/// The suffix of a module file packed as a zstd frame.
pub const PACKED_SUFFIX: &str = ".zst";

/// Where a module's file goes once packed: `kernel/fs/ext4/ext4.ko` ->
/// `kernel/fs/ext4/ext4.ko.zst`. A module the kernel package ships compressed already
/// (`.ko.xz`) is not packed again, so only `.ko` files are renamed; `nodeos` loads by the
/// name `modules.dep` gives.
pub fn packed_path(path: &str) -> String {
    if path.ends_with(".ko") {
        format!("{path}{PACKED_SUFFIX}")
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_modules_are_renamed() {
        assert_eq!(
            packed_path("kernel/fs/ext4/ext4.ko"),
            "kernel/fs/ext4/ext4.ko.zst"
        );
        assert_eq!(packed_path("kernel/d/old.ko.xz"), "kernel/d/old.ko.xz");
    }
}
