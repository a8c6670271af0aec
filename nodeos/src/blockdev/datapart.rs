//! The data partition: the ext4 file system labelled `CLOUDOS-DATA` that holds a node's
//! state, mounted at /var/lib/cloudos. Its label and mount point, finding it among the
//! block devices, and which device is mounted there now.
//!
//! Finds only. Mounting it (or a tmpfs when there is none) is PID 1's
//! (`init::datastore`); growing it is `grow`'s; writing settings onto it is the
//! installer's (`diskinstall::inplace`, `diskinstall::writer`).

pub const DATA_LABEL: &str = "CLOUDOS-DATA";
pub const DATA_DIR: &str = "/var/lib/cloudos";

/// The device of the data partition, if a disk has one.
pub fn find() -> Option<String> {
    super::labels::find_ext4_labelled(DATA_LABEL)
}

/// The block device mounted at the data directory, from `/proc/self/mounts`; `None` for
/// the tmpfs a node without a data partition keeps its state in.
pub fn mounted_device(mounts: &str) -> Option<String> {
    mounts
        .lines()
        // The last mount at a path is the one in effect.
        .rev()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?))
        })
        .find(|(_, at)| *at == DATA_DIR)
        .map(|(device, _)| device)
        .filter(|device| device.starts_with("/dev/"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_device_is_the_block_device_mounted_at_the_data_dir() {
        let card = "/dev/root / ext4 rw 0 0\n\
                    /dev/mmcblk0p2 /var/lib/cloudos ext4 rw,nosuid,nodev 0 0\n";
        assert_eq!(mounted_device(card).as_deref(), Some("/dev/mmcblk0p2"));
        let live = "cloudos-data /var/lib/cloudos tmpfs rw,nosuid,nodev,mode=700 0 0\n";
        assert_eq!(mounted_device(live), None);
        assert_eq!(mounted_device("proc /proc proc rw 0 0\n"), None);
        // Mounted over: the later line wins.
        let over = "/dev/sda3 /var/lib/cloudos ext4 rw 0 0\n\
                    cloudos-data /var/lib/cloudos tmpfs rw 0 0\n";
        assert_eq!(mounted_device(over), None);
    }
}
