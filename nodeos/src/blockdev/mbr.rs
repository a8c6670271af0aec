//! The classic MBR partition table in sector 0: its four primary entries, read, and one
//! entry's size rewritten. Pure functions over the sector's bytes.
//!
//! Owns the MBR's byte layout only. Deciding how far a partition may grow is `grow`'s;
//! GPT disks are the installer crate's (`cloudos_installer::plan`), and a GPT's
//! protective MBR is not read as a table here.

/// Bytes per sector in MBR addresses.
pub const SECTOR: u64 = 512;

const TABLE: usize = 446;
const ENTRY: usize = 16;
/// The partition type of GPT's protective MBR entry.
const GPT_PROTECTIVE: u8 = 0xEE;

/// One of the four primary entries of an MBR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: u8,
    pub start: u64,
    pub sectors: u64,
}

/// The partition entries of a classic MBR (`None` if sector 0 is not one, or is
/// GPT's protective MBR).
pub fn entries(sector0: &[u8]) -> Option<[Entry; 4]> {
    if sector0.len() < 512 || sector0[510..512] != [0x55, 0xAA] {
        return None;
    }
    let entry = |i: usize| {
        let e = &sector0[TABLE + i * ENTRY..TABLE + (i + 1) * ENTRY];
        let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        Entry {
            kind: e[4],
            start: le(&e[8..12]),
            sectors: le(&e[12..16]),
        }
    };
    let entries = [entry(0), entry(1), entry(2), entry(3)];
    if entries.iter().any(|e| e.kind == GPT_PROTECTIVE) {
        return None;
    }
    Some(entries)
}

/// Sector 0 with partition `number`'s (1–4) size set to `sectors`; unchanged for
/// another number.
pub fn with_size(sector0: &[u8; 512], number: u32, sectors: u64) -> [u8; 512] {
    let mut out = *sector0;
    let Some(index) = (number as usize).checked_sub(1).filter(|i| *i < 4) else {
        return out;
    };
    let at = TABLE + index * ENTRY;
    let sectors = u32::try_from(sectors).unwrap_or(u32::MAX);
    out[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    // The end CHS cannot describe a large disk: the "use LBA" marker.
    out[at + 5..at + 8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sector 0 with these (type, start, sectors) entries.
    pub(crate) fn mbr(entries: &[(u8, u32, u32)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        for (i, (kind, start, size)) in entries.iter().enumerate() {
            let at = TABLE + i * ENTRY;
            s[at + 4] = *kind;
            s[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            s[at + 12..at + 16].copy_from_slice(&size.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    /// The Pi image: FAT at 4 MiB (256 MiB), data after it (64 MiB).
    pub(crate) fn pi_card() -> [u8; 512] {
        mbr(&[(0x0c, 8192, 524288), (0x83, 532480, 131072)])
    }

    #[test]
    fn gpt_and_garbage_are_not_mbrs() {
        assert!(entries(&[0u8; 512]).is_none());
        assert!(entries(&mbr(&[(0xEE, 1, 0xFFFF_FFFF)])).is_none());
        assert!(entries(&[0u8; 100]).is_none());
    }

    #[test]
    fn the_new_size_is_written_to_the_right_entry_only() {
        let before = pi_card();
        let after = with_size(&before, 2, 1564672);
        let e = entries(&after).unwrap();
        assert_eq!(e[0], entries(&before).unwrap()[0]);
        assert_eq!(
            e[1],
            Entry {
                kind: 0x83,
                start: 532480,
                sectors: 1564672
            }
        );
        assert_eq!(after[..TABLE], before[..TABLE]);
        assert_eq!(after[510..], before[510..]);
        // No such entry: nothing changes.
        assert_eq!(with_size(&before, 0, 1), before);
        assert_eq!(with_size(&before, 5, 1), before);
    }
}
