//! `mkrelease`: what a release build does with keys, versions and bundles. The build
//! (`scripts/build.sh`) stamps the version into `nodeos`, builds the initramfs around it,
//! then signs one bundle per architecture; a person makes a release key once with `keygen`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cloudos_release::{bundle, stamp, Arch, Keyring, SecretKey, Version};

#[derive(Parser)]
#[command(
    name = "mkrelease",
    about = "CloudOS release keys, version stamps and signed bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a release key pair: the secret file (mode 0600) and the public line nodes trust.
    Keygen {
        #[arg(long)]
        secret: PathBuf,
        #[arg(long)]
        public: PathBuf,
    },
    /// Print the version stamped into BINARY, or with --version write it (in place).
    Stamp {
        binary: PathBuf,
        #[arg(long)]
        version: Option<Version>,
    },
    /// Sign a bundle of a kernel, an initramfs, nodeos and the etcd pack.
    Bundle {
        /// The release's secret key.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        version: Version,
        #[arg(long, value_parser = parse_arch)]
        arch: Arch,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initramfs: PathBuf,
        /// The nodeos binary, stamped with --version.
        #[arg(long)]
        nodeos: PathBuf,
        /// The etcd pack (scripts/build.sh makes it: etcd, its loader and libc).
        #[arg(long)]
        etcd: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check a bundle against the public keys in KEYS and print its manifest.
    Verify {
        bundle: PathBuf,
        #[arg(long)]
        keys: PathBuf,
    },
}

fn parse_arch(text: &str) -> Result<Arch, String> {
    Arch::parse(text).ok_or_else(|| format!("unknown architecture {text:?} (x86_64, aarch64)"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Keygen { secret, public } => keygen(&secret, &public),
        Command::Stamp { binary, version } => stamp_binary(&binary, version.as_ref()),
        Command::Bundle {
            key,
            version,
            arch,
            kernel,
            initramfs,
            nodeos,
            etcd,
            output,
        } => {
            let text = fs::read_to_string(&key)
                .with_context(|| format!("reading the release key {}", key.display()))?;
            let secret = SecretKey::parse(&text)
                .with_context(|| format!("reading the release key {}", key.display()))?;
            let binary =
                fs::read(&nodeos).with_context(|| format!("reading {}", nodeos.display()))?;
            let stamped = stamp::read(&binary).with_context(|| format!("{}", nodeos.display()))?;
            if stamped != version {
                bail!(
                    "{} is stamped {stamped}, not {version}: run `mkrelease stamp {} --version {version}` first",
                    nodeos.display(),
                    nodeos.display()
                );
            }
            let tmp = output.with_extension("bundle.tmp");
            let file =
                fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let manifest = bundle::write(
                std::io::BufWriter::new(file),
                &secret,
                version,
                arch,
                &[kernel, initramfs, nodeos, etcd],
            )?;
            fs::rename(&tmp, &output)?;
            println!(
                "{}: {} {} signed by {}, {} bytes of parts",
                output.display(),
                manifest.version,
                manifest.arch,
                secret.public().id(),
                manifest.size()
            );
            Ok(())
        }
        Command::Verify { bundle: path, keys } => {
            let ring = Keyring::parse(&fs::read_to_string(&keys)?)
                .with_context(|| format!("reading {}", keys.display()))?;
            let file =
                fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let verified = bundle::open(std::io::BufReader::new(file), &ring, |_| Ok(()), None)
                .with_context(|| format!("{}", path.display()))?;
            print!("{}", String::from_utf8_lossy(&verified.manifest.to_bytes()));
            println!("signed by {}", verified.key);
            Ok(())
        }
    }
}

fn keygen(secret_path: &Path, public_path: &Path) -> Result<()> {
    let secret = SecretKey::generate()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret_path)
        .with_context(|| format!("creating {} (it must not exist)", secret_path.display()))?;
    file.write_all(secret.to_text().as_bytes())?;
    file.sync_all()?;
    fs::write(public_path, secret.public().to_text())?;
    println!(
        "release key {}: secret in {}, public in {}",
        secret.public().id(),
        secret_path.display(),
        public_path.display()
    );
    Ok(())
}

fn stamp_binary(binary: &Path, version: Option<&Version>) -> Result<()> {
    let mut bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let Some(version) = version else {
        println!(
            "{}",
            stamp::read(&bytes).with_context(|| format!("{}", binary.display()))?
        );
        return Ok(());
    };
    stamp::write(&mut bytes, version).with_context(|| format!("{}", binary.display()))?;
    // Through a new file and a rename: a running copy of the binary is never written.
    let tmp = binary.with_extension("stamp.tmp");
    let mode = fs::metadata(binary)?.permissions();
    fs::write(&tmp, &bytes)?;
    fs::set_permissions(&tmp, mode)?;
    fs::rename(&tmp, binary)?;
    Ok(())
}
