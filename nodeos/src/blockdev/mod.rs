//! Block devices and the file systems on them, for PID 1 and the disk installer alike:
//! which devices there are and when their drivers have probed, how a partition relates
//! to its disk, telling the kernel about partitions, growing one, and reading the
//! headers that say what a device holds.
//!
//! - `storage`: the storage controllers' drivers, probed in the background, and the
//!   wait for their disks;
//! - `devices`: the block devices sysfs lists, a partition's number and disk, the disk's
//!   size, device node names;
//! - `blkpg`: the kernel's partition ioctls (BLKPG add, delete and resize; BLKRRPART);
//! - `mbr`: the classic MBR partition table, read and one entry resized (pure);
//! - `ext4`: the ext4 superblock (the one parser of it) and the online resize;
//! - `labels`: which file system and label a device holds, and finding devices by label;
//! - `datapart`: the data partition's label and mount point, and finding it;
//! - `grow`: growing a partition and its ext4 to the end of its disk (the Pi's card);
//! - `mount`: a file system mounted for as long as a value lives.
//!
//! `init` and `diskinstall` both import from here, and neither from the other for disk
//! matters; this module imports neither. It decides no policy: whether state lives on
//! disk or in memory, what a failed grow costs, and what is installed where are theirs.
//! GPT tables are planned and encoded by the installer crate (`cloudos_installer::plan`).

pub mod blkpg;
pub mod datapart;
pub mod devices;
pub mod ext4;
pub mod grow;
pub mod labels;
pub mod mbr;
pub mod mount;
pub mod storage;
