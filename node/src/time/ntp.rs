//! The NTPv4 packet (RFC 5905, 48 bytes) and timestamp conversions.
//!
//! NTP timestamps are 32.32 fixed point seconds since 1900-01-01; the 32-bit
//! seconds wrap every 136 years ("eras"): era 0 ends in 2036. Converting
//! back to Unix time picks the era that puts the result closest to a pivot
//! (the local clock), as RFC 5905 recommends.

/// Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch).
pub const NTP_UNIX_DELTA: i64 = 2_208_988_800;
/// Length of an NTP packet without extensions.
pub const PACKET_LEN: usize = 48;
/// Seconds in one NTP era.
const ERA_SECS: i64 = 1 << 32;

pub const MODE_CLIENT: u8 = 3;
pub const MODE_SERVER: u8 = 4;
/// Leap indicator "clock unsynchronized".
pub const LI_UNSYNC: u8 = 3;

/// Unix time in µs → NTP 32.32 timestamp (era folded away).
pub fn to_ntp(unix_us: i64) -> u64 {
    let secs = unix_us.div_euclid(1_000_000) + NTP_UNIX_DELTA;
    let us = unix_us.rem_euclid(1_000_000) as u64;
    let era_secs = secs.rem_euclid(ERA_SECS) as u64;
    let frac = ((us << 32) + 500_000) / 1_000_000;
    (era_secs << 32) | frac.min(u32::MAX as u64)
}

/// NTP timestamp → Unix time in µs, choosing the era nearest `pivot_unix_us`.
pub fn from_ntp(ts: u64, pivot_unix_us: i64) -> i64 {
    let secs = (ts >> 32) as i64;
    let frac = ts & 0xffff_ffff;
    let us = ((frac * 1_000_000) + (1 << 31)) >> 32;
    let pivot_ntp = pivot_unix_us.div_euclid(1_000_000) + NTP_UNIX_DELTA;
    let pivot_era = pivot_ntp.div_euclid(ERA_SECS);
    let best = (pivot_era - 1..=pivot_era + 1)
        .map(|era| era * ERA_SECS + secs)
        .min_by_key(|s| (s - pivot_ntp).abs())
        .expect("three candidates");
    (best - NTP_UNIX_DELTA) * 1_000_000 + us as i64
}

/// An NTP packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    /// 16.16 seconds.
    pub root_delay: u32,
    /// 16.16 seconds.
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub reference_ts: u64,
    pub origin_ts: u64,
    pub receive_ts: u64,
    pub transmit_ts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {0} bytes is shorter than 48")]
    Short(usize),
}

impl Packet {
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (self.leap & 0b11) << 6 | (self.version & 0b111) << 3 | (self.mode & 0b111);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference_ts.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin_ts.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive_ts.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit_ts.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, PacketError> {
        if b.len() < PACKET_LEN {
            return Err(PacketError::Short(b.len()));
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Packet {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 0b111,
            mode: b[0] & 0b111,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: b[12..16].try_into().expect("4 bytes"),
            reference_ts: u64_at(16),
            origin_ts: u64_at(24),
            receive_ts: u64_at(32),
            transmit_ts: u64_at(40),
        })
    }
}

/// Duration in µs → NTP short format (16.16 seconds), saturating.
pub fn to_short(us: u64) -> u32 {
    let v = (us << 16) / 1_000_000;
    v.min(u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known timestamps: the Unix epoch is 2208988800 s after the NTP epoch,
    /// half a second is fraction 0x80000000, and 2036-02-07T06:28:16Z is the
    /// start of era 1 (seconds field 0).
    #[test]
    fn ntp_timestamp_known_values() {
        assert_eq!(to_ntp(0), (2_208_988_800u64) << 32);
        assert_eq!(to_ntp(500_000) & 0xffff_ffff, 0x8000_0000);
        let era1_unix_s: i64 = (1i64 << 32) - NTP_UNIX_DELTA; // 2085978496
        assert_eq!(to_ntp(era1_unix_s * 1_000_000), 0);
        // 2026-11-21T00:00:00Z = 1795219200 Unix.
        let t = 1_795_219_200i64 * 1_000_000 + 250_000;
        assert_eq!(to_ntp(t) >> 32, 1_795_219_200 + 2_208_988_800);
        assert_eq!(to_ntp(t) & 0xffff_ffff, 0x4000_0000);
    }

    /// Round trips through NTP format are exact to the µs, also across the
    /// 2036 era boundary when the pivot is on either side.
    #[test]
    fn ntp_timestamp_roundtrip_and_era() {
        for unix_us in [
            0i64,
            1_795_219_200_123_456,
            2_085_978_495_999_999,
            2_085_978_496_000_001,
            4_000_000_000_000_000,
        ] {
            let ts = to_ntp(unix_us);
            assert_eq!(from_ntp(ts, unix_us), unix_us, "{unix_us}");
            assert_eq!(from_ntp(ts, unix_us + 3_600_000_000), unix_us, "pivot an hour later");
        }
        // Seconds field 5 means era 1 when the pivot is just after 2036.
        let after_2036 = 2_085_978_500i64 * 1_000_000;
        assert_eq!(from_ntp(5u64 << 32, after_2036), (2_085_978_496 + 5) * 1_000_000);
    }

    /// A client request byte vector decodes to mode 3 version 4, and a server
    /// packet encodes to the expected bytes and decodes back to itself.
    #[test]
    fn ntp_packet_bytes() {
        let mut req = [0u8; 48];
        req[0] = 0x23; // LI 0, VN 4, mode 3
        req[40..48].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        let p = Packet::decode(&req).unwrap();
        assert_eq!((p.leap, p.version, p.mode), (0, 4, MODE_CLIENT));
        assert_eq!(p.transmit_ts, 0x1122_3344_5566_7788);

        let s = Packet {
            leap: 0,
            version: 4,
            mode: MODE_SERVER,
            stratum: 2,
            poll: 6,
            precision: -20,
            root_delay: to_short(1500),
            root_dispersion: to_short(5000),
            reference_id: [127, 0, 0, 1],
            reference_ts: 1,
            origin_ts: 0x1122_3344_5566_7788,
            receive_ts: 3,
            transmit_ts: 4,
        };
        let b = s.encode();
        assert_eq!(b[0], 0x24);
        assert_eq!(&b[1..4], &[2, 6, 0xec]);
        assert_eq!(&b[4..8], &[0, 0, 0, 0x62]); // 1.5 ms in 16.16
        assert_eq!(&b[12..16], &[127, 0, 0, 1]);
        assert_eq!(&b[24..32], &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(Packet::decode(&b).unwrap(), s);
        assert_eq!(Packet::decode(&b[..47]), Err(PacketError::Short(47)));
    }
}
