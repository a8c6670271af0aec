//! GRUB's environment block (`/boot/grub/grubenv` on the ESP) as names and values.
//!
//! The block is exactly 1024 bytes: a header line, `name=value` lines, then `#` up to the
//! end. GRUB's `save_env` rewrites it in place and cannot follow a file replaced by a
//! rename, so every writer here keeps the size and writes over the same file (see
//! image/grub-disk.cfg for the contract). Values CloudOS stores are short words; a value GRUB
//! would escape (a backslash or a newline) is refused rather than escaped.

pub const SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("not a GRUB environment block ({0})")]
    Form(&'static str),
    #[error("the variables no longer fit in the {SIZE}-byte block")]
    Full,
    #[error("{0:?} cannot be stored in GRUB's environment")]
    Value(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrubEnv {
    vars: Vec<(String, String)>,
}

impl GrubEnv {
    pub fn parse(block: &[u8]) -> Result<GrubEnv, EnvError> {
        if block.len() != SIZE {
            return Err(EnvError::Form("not 1024 bytes"));
        }
        let text = std::str::from_utf8(block).map_err(|_| EnvError::Form("not text"))?;
        let body = text
            .strip_prefix(HEADER)
            .ok_or(EnvError::Form("no header"))?;
        let mut vars = Vec::new();
        for line in body.split('\n') {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or(EnvError::Form("a line without '='"))?;
            vars.push((name.to_owned(), value.to_owned()));
        }
        Ok(GrubEnv { vars })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name`, in its place if it is there, else at the end.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), EnvError> {
        let plain = |s: &str| !s.is_empty() && !s.contains(['\\', '\n', '=', '#']);
        if !plain(name) || value.contains(['\\', '\n']) {
            return Err(EnvError::Value(format!("{name}={value}")));
        }
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.vars.push((name.to_owned(), value.to_owned())),
        }
        Ok(())
    }

    pub fn render(&self) -> Result<Vec<u8>, EnvError> {
        let mut out = HEADER.to_owned();
        for (name, value) in &self.vars {
            out.push_str(name);
            out.push('=');
            out.push_str(value);
            out.push('\n');
        }
        if out.len() > SIZE {
            return Err(EnvError::Full);
        }
        let mut bytes = out.into_bytes();
        bytes.resize(SIZE, b'#');
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(vars: &str) -> Vec<u8> {
        let mut b = format!("{HEADER}{vars}").into_bytes();
        b.resize(SIZE, b'#');
        b
    }

    #[test]
    fn a_block_round_trips_and_changes_keep_order_and_size() {
        let original = block("cloudos_slot=a\ncloudos_tries=3\ncloudos_good=1\n");
        let mut env = GrubEnv::parse(&original).unwrap();
        assert_eq!(env.render().unwrap(), original);
        env.set("cloudos_slot", "b").unwrap();
        env.set("cloudos_good", "0").unwrap();
        env.set("cloudos_upgrade", "0.2.0").unwrap();
        let written = env.render().unwrap();
        assert_eq!(written.len(), SIZE);
        assert_eq!(
            written,
            block("cloudos_slot=b\ncloudos_tries=3\ncloudos_good=0\ncloudos_upgrade=0.2.0\n")
        );
        assert_eq!(
            GrubEnv::parse(&written).unwrap().get("cloudos_upgrade"),
            Some("0.2.0")
        );
    }

    #[test]
    fn broken_blocks_and_values_grub_would_escape_are_refused() {
        assert!(GrubEnv::parse(&block("x=1\n")[..512]).is_err());
        let mut no_header = block("x=1\n");
        no_header[0] = b'X';
        assert!(GrubEnv::parse(&no_header).is_err());
        let mut env = GrubEnv::default();
        assert!(env.set("a", "x\ny").is_err());
        assert!(env.set("a=b", "1").is_err());
        env.set("big", &"x".repeat(SIZE)).unwrap();
        assert_eq!(env.render(), Err(EnvError::Full));
    }
}
