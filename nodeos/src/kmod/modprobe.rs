//! nodeos as `/sbin/modprobe`: the kernel runs it (as `modprobe -q -- NAME`)
//! when a driver asks for a module by name or alias at run time, e.g. ext4
//! asking for `crypto-crc32c` at mount. Without an answer such mounts fail.

use std::path::Path;

use super::{Loader, ModuleIndex};

/// The module name or alias in a modprobe command line; flags are ignored.
pub fn requested_name(args: &[String]) -> Option<&str> {
    args.iter()
        .skip(1)
        .map(String::as_str)
        .find(|a| !a.starts_with('-'))
}

/// Runs as modprobe; returns the exit code. Output goes to the kernel log:
/// the kernel's helper has no terminal.
pub fn main(args: &[String]) -> i32 {
    let Some(name) = requested_name(args) else {
        return 1;
    };
    let release = crate::kmod::kernel_release();
    let index = match ModuleIndex::load(&Path::new("/lib/modules").join(&release)) {
        Ok(index) => index,
        Err(e) => {
            kernel_log(&format!("modprobe {name}: {e}"));
            return 1;
        }
    };
    let by_name = index.contains(name);
    if !by_name && index.lookup(name).is_empty() {
        kernel_log(&format!("modprobe: no module for {name}"));
        return 1;
    }
    let loader = Loader::new(index);
    let result = if by_name {
        loader.load(name)
    } else {
        loader.load_for_alias(name)
    };
    match result {
        Ok(loaded) => {
            if !loaded.is_empty() {
                kernel_log(&format!("modprobe {name}: loaded {}", loaded.join(" ")));
            }
            0
        }
        Err(e) => {
            kernel_log(&format!("modprobe {name}: {e}"));
            1
        }
    }
}

fn kernel_log(message: &str) {
    use std::io::Write;
    if let Ok(mut kmsg) = std::fs::File::options().write(true).open("/dev/kmsg") {
        let _ = writeln!(kmsg, "<6>nodeos: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_first_word_that_is_not_a_flag() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            requested_name(&args(&["/sbin/modprobe", "-q", "--", "crypto-crc32c"])),
            Some("crypto-crc32c")
        );
        assert_eq!(
            requested_name(&args(&["modprobe", "fs-ext4"])),
            Some("fs-ext4")
        );
        assert_eq!(requested_name(&args(&["modprobe", "-q", "--"])), None);
    }
}
