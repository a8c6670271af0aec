//! mkinitramfs: builds the CloudOS initramfs (or the benchmark's busybox floor image).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use cloudos_initramfs::{ModuleSpec, Spec};

/// Build a reproducible compressed cpio (newc) initramfs without root: LZ4 for
/// CloudOS's image, gzip for the benchmark floor.
///
/// Entries are sorted, owned by 0:0, stamped with SOURCE_DATE_EPOCH (default 0).
#[derive(Debug, Parser)]
#[command(name = "mkinitramfs", version)]
struct Args {
    /// Static PID 1 binary, installed as /init (and /bin/nodeos -> /init).
    #[arg(long, conflicts_with = "floor_busybox")]
    init: Option<PathBuf>,

    /// Kernel release, e.g. 6.1.0-56-amd64.
    #[arg(long, requires = "modules_root")]
    kernel_release: Option<String>,

    /// Unpacked kernel package (holds lib/modules/<kver>/modules.dep).
    #[arg(long, requires = "kernel_release")]
    modules_root: Option<PathBuf>,

    /// File listing module names, one a line, `#` comments; their dependency closure is included.
    #[arg(long, requires = "modules_root")]
    modules: Option<PathBuf>,

    /// Unpacked firmware package (holds lib/firmware/…), repeatable: the firmware files
    /// the modules name in their `firmware:` fields are copied from these, no others.
    #[arg(long, value_name = "DIR", requires = "modules")]
    firmware: Vec<PathBuf>,

    /// CA bundle, installed as /etc/ssl/certs/ca-certificates.crt.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,

    /// Extra file or directory SRC installed at DEST (repeatable).
    #[arg(long, value_name = "SRC:DEST")]
    extra: Vec<String>,

    /// Build the benchmark floor image instead: this static busybox runs a /init script
    /// that mounts /proc, prints "floor: userland up" and powers off.
    #[arg(long, conflicts_with_all = ["modules", "ca_bundle", "extra"])]
    floor_busybox: Option<PathBuf>,

    /// Output file (compressed cpio).
    #[arg(long, short)]
    output: PathBuf,

    /// Print the modules in load order.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mtime = cloudos_initramfs::source_date_epoch()?;

    let (archive, modules) = if let Some(bb) = &args.floor_busybox {
        (cloudos_initramfs::build_floor(bb)?, Vec::new())
    } else {
        let modules = match (&args.modules, &args.kernel_release, &args.modules_root) {
            (Some(list), Some(kver), Some(root)) => {
                let text = std::fs::read_to_string(list)
                    .with_context(|| format!("reading {}", list.display()))?;
                Some(ModuleSpec {
                    kernel_release: kver.clone(),
                    modules_root: root.clone(),
                    names: cloudos_initramfs::modules::parse_list(&text),
                    firmware_roots: args.firmware.clone(),
                })
            }
            _ => None,
        };
        let spec = Spec {
            init: args.init.clone(),
            modules,
            ca_bundle: args.ca_bundle.clone(),
            extra: args
                .extra
                .iter()
                .map(|e| cloudos_initramfs::parse_extra(e))
                .collect::<Result<_>>()?,
        };
        let (a, report) = cloudos_initramfs::build(&spec)?;
        if !args.firmware.is_empty() {
            eprintln!(
                "mkinitramfs: {} firmware files; named by a module but in no package: {}",
                report.firmware.len(),
                if report.firmware_missing.is_empty() {
                    "none".to_string()
                } else {
                    report.firmware_missing.join(" ")
                }
            );
        }
        (a, report.modules)
    };

    let compression = if args.floor_busybox.is_some() {
        cloudos_initramfs::Compression::Gzip
    } else {
        cloudos_initramfs::Compression::Lz4
    };
    let size = cloudos_initramfs::write_image(&archive, &args.output, mtime, compression)?;
    if args.verbose {
        for m in &modules {
            println!("{m}");
        }
    }
    eprintln!(
        "mkinitramfs: {} ({} entries, {} modules, {} bytes)",
        args.output.display(),
        archive.paths().count(),
        modules.len(),
        size
    );
    Ok(())
}
