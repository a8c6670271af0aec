//! How a module file is named once `mkinitramfs` packed it as one LZ4 frame, which is how
//! `nodeos` knows to unpack it before handing it to the kernel (the Debian kernel cannot
//! unpack modules itself). The contract between the two is this suffix.

/// The suffix of a module file packed as an LZ4 frame.
pub const PACKED_SUFFIX: &str = ".lz4";

/// Where a module's file goes once packed: `kernel/fs/ext4/ext4.ko` ->
/// `kernel/fs/ext4/ext4.ko.lz4`. A module the kernel package ships compressed already
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
            "kernel/fs/ext4/ext4.ko.lz4"
        );
        assert_eq!(packed_path("kernel/d/old.ko.xz"), "kernel/d/old.ko.xz");
    }
}
