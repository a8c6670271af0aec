//! The SNTP packet (RFC 4330 / RFC 5905, the 48-byte header without extension fields) and
//! the arithmetic on its timestamps: 32.32 fixed-point seconds since 1900, compared modulo
//! 2^64 so that the era rollover of 2036 and clocks decades apart (a node that booted in
//! 2001 or 2040) still give the right offset, as long as the two are within 68 years.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (the NTP epoch) to 1970-01-01.
const NTP_TO_UNIX_SECS: u64 = 2_208_988_800;
/// Length of the header; anything after it (extension fields, a MAC) is ignored.
pub const PACKET_LEN: usize = 48;

/// Association modes (RFC 5905, figure 10) this crate speaks.
pub const MODE_CLIENT: u8 = 3;
pub const MODE_SERVER: u8 = 4;
/// Leap indicator 3: the sender's clock is not synchronised.
pub const LEAP_UNSYNCHRONISED: u8 = 3;

/// A 32.32 NTP timestamp, seconds since 1900 modulo 2^32 (the era is not carried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    pub const ZERO: NtpTimestamp = NtpTimestamp(0);

    /// `time` as an NTP timestamp (times before 1970 are 1970).
    pub fn from_system(time: SystemTime) -> NtpTimestamp {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs().wrapping_add(NTP_TO_UNIX_SECS) & 0xffff_ffff;
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp((secs << 32) | frac)
    }

    /// `self - earlier` in nanoseconds, modulo 2^64 on the fixed-point values: right
    /// whenever the two are within 68 years of each other, across era boundaries.
    pub fn nanos_since(self, earlier: NtpTimestamp) -> i64 {
        let diff = self.0.wrapping_sub(earlier.0) as i64;
        ((i128::from(diff) * 1_000_000_000) >> 32) as i64
    }
}

/// One SNTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    pub root_delay: u32,
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub reference: NtpTimestamp,
    pub origin: NtpTimestamp,
    pub receive: NtpTimestamp,
    pub transmit: NtpTimestamp,
}

/// Why a datagram is not a packet we use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} bytes is shorter than an SNTP header ({PACKET_LEN})")]
    Short(usize),
}

impl Packet {
    /// A client's request, version 4, carrying `transmit` (which the server echoes as its
    /// origin, so the answer can be matched to it).
    pub fn request(transmit: NtpTimestamp) -> Packet {
        Packet {
            version: 4,
            mode: MODE_CLIENT,
            transmit,
            ..Packet::default()
        }
    }

    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive.0.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit.0.to_be_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Packet, WireError> {
        let Some(b) = bytes.get(..PACKET_LEN) else {
            return Err(WireError::Short(bytes.len()));
        };
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let ts_at = |i: usize| NtpTimestamp(u64::from(u32_at(i)) << 32 | u64::from(u32_at(i + 4)));
        Ok(Packet {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 7,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [b[12], b[13], b[14], b[15]],
            reference: ts_at(16),
            origin: ts_at(24),
            receive: ts_at(32),
            transmit: ts_at(40),
        })
    }
}

/// What one exchange measured: how far our clock is behind the server's (positive: ours
/// is behind, add it) and the round trip, both in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub offset_nanos: i64,
    pub delay_nanos: i64,
    pub stratum: u8,
}

impl Sample {
    /// RFC 5905's on-wire calculation from our send (t1), the server's receive (t2) and
    /// transmit (t3), and our receive (t4).
    pub fn from_times(
        t1: NtpTimestamp,
        t2: NtpTimestamp,
        t3: NtpTimestamp,
        t4: NtpTimestamp,
        stratum: u8,
    ) -> Sample {
        let a = i128::from(t2.nanos_since(t1));
        let b = i128::from(t3.nanos_since(t4));
        let delay = i128::from(t4.nanos_since(t1)) - i128::from(t3.nanos_since(t2));
        Sample {
            offset_nanos: ((a + b) / 2) as i64,
            delay_nanos: delay.max(0) as i64,
            stratum,
        }
    }

    /// The offset as a signed number of seconds, for people.
    pub fn offset_secs(&self) -> f64 {
        self.offset_nanos as f64 / 1e9
    }

    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(unix_secs, nanos)
    }

    #[test]
    fn timestamps_of_known_dates() {
        // 1970-01-01 is 2208988800 s after the NTP epoch.
        assert_eq!(
            NtpTimestamp::from_system(UNIX_EPOCH).0,
            2_208_988_800u64 << 32
        );
        // Half a second is half of 2^32 in the fraction.
        assert_eq!(
            NtpTimestamp::from_system(at(0, 500_000_000)).0 & 0xffff_ffff,
            1 << 31
        );
        // 2036-02-07T06:28:16Z starts era 1: the seconds wrap to 0.
        assert_eq!(NtpTimestamp::from_system(at(2_085_978_496, 0)).0, 0);
    }

    #[test]
    fn differences_hold_across_the_2036_rollover_and_decades() {
        let y2001 = NtpTimestamp::from_system(at(978_307_200, 0));
        let y2026 = NtpTimestamp::from_system(at(1_796_531_282, 250_000_000));
        let y2040 = NtpTimestamp::from_system(at(2_208_988_800, 0));
        let secs = |n: i64| n as f64 / 1e9;
        assert!((secs(y2026.nanos_since(y2001)) - 818_224_082.25).abs() < 1e-6);
        assert!((secs(y2001.nanos_since(y2026)) + 818_224_082.25).abs() < 1e-6);
        // 2040 is in era 1 (its seconds field wrapped), still 13.99 years after 2026.
        assert!((secs(y2040.nanos_since(y2026)) - 412_457_517.75).abs() < 1e-6);
        assert!((secs(y2026.nanos_since(y2040)) + 412_457_517.75).abs() < 1e-6);
    }

    #[test]
    fn packets_round_trip_and_the_fields_sit_where_rfc_5905_puts_them() {
        let p = Packet {
            leap: 0,
            version: 4,
            mode: MODE_SERVER,
            stratum: 2,
            poll: 6,
            precision: -20,
            root_delay: 0x0001_0000,
            root_dispersion: 0x0000_8000,
            reference_id: *b"LOCL",
            reference: NtpTimestamp(1),
            origin: NtpTimestamp(2),
            receive: NtpTimestamp(3),
            transmit: NtpTimestamp(0x0102_0304_0506_0708),
        };
        let bytes = p.encode();
        assert_eq!(bytes[0], 0b00_100_100, "LI 0, VN 4, mode 4");
        assert_eq!(bytes[1], 2);
        assert_eq!(bytes[3], 0xec, "precision -20");
        assert_eq!(&bytes[12..16], b"LOCL");
        assert_eq!(&bytes[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Packet::decode(&bytes), Ok(p));
        // Extension fields after the header are ignored; a short datagram is refused.
        let mut long = bytes.to_vec();
        long.extend_from_slice(&[0xff; 20]);
        assert_eq!(Packet::decode(&long), Ok(p));
        assert_eq!(Packet::decode(&bytes[..47]), Err(WireError::Short(47)));
        let request = Packet::request(NtpTimestamp(9)).encode();
        assert_eq!(request[0], 0b00_100_011, "LI 0, VN 4, mode 3 (client)");
    }

    #[test]
    fn offset_and_delay_from_the_four_times() {
        let base = 1_796_531_282u64;
        let ts = |secs: u64, ms: u32| NtpTimestamp::from_system(at(secs, ms * 1_000_000));
        // We are 10 s behind; 20 ms each way; the server holds the request 5 ms.
        let t1 = ts(base, 0);
        let t2 = ts(base + 10, 20);
        let t3 = ts(base + 10, 25);
        let t4 = ts(base, 45);
        let s = Sample::from_times(t1, t2, t3, t4, 3);
        assert!((s.offset_secs() - 10.0).abs() < 1e-6, "{s:?}");
        assert!((s.delay_nanos - 40_000_000).abs() < 10, "{s:?}");
        // A node in 2040 asking a server in 2026: a large negative offset, exactly.
        let t1 = ts(2_208_988_800, 0);
        let t2 = ts(base, 10);
        let t3 = ts(base, 10);
        let t4 = ts(2_208_988_800, 20);
        let s = Sample::from_times(t1, t2, t3, t4, 3);
        assert!(
            (s.offset_secs() + (2_208_988_800 - base) as f64).abs() < 1e-3,
            "{s:?}"
        );
    }
}
