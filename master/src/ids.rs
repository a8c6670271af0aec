//! Random request ids (`u-1f2e3d4c5b6a`): names for the orders the master sends a node, which
//! the node's reports carry back.

use std::io::Read as _;

/// `prefix-` and 12 hex digits from the kernel's random source.
pub fn request_id(prefix: &str) -> Result<String, String> {
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("no randomness for a request id: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{prefix}-{hex}"))
}
