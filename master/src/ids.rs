//! Random names from the kernel's random source: task ids (`t-…`), the ids of the requests
//! the master sends a node (`u-1f2e3d4c5b6a`, which the node's reports carry back), and the
//! tags of uploads in progress.

use std::io::Read as _;

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("no randomness for an id: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `prefix-` and 12 hex digits.
pub fn request_id(prefix: &str) -> Result<String, String> {
    Ok(format!("{prefix}-{}", random_hex(6)?))
}
