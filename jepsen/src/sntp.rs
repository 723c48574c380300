//! A minimal SNTP client (RFC 4330), so the harness can measure each node's
//! *cluster clock* itself instead of trusting the node's own `in_tolerance`.
//!
//! Every heraldd answers SNTP on its time-port with cluster time in the
//! receive/transmit timestamps. The harness' wall clock is never faked, so
//! `offset = node cluster time − harness clock` measured on two nodes gives
//! their skew against each other (error ≤ half the sum of the round trips),
//! whatever their libfaketime offsets.
//!
//! Must be used from a thread inside the client namespace (`netns::enter`).

use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_DELTA: i64 = 2_208_988_800;

/// One measurement: the best (smallest round trip) of a few samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Node cluster time − harness wall clock, ms (positive: node ahead).
    pub offset_ms: f64,
    /// Round trip minus the server's processing time, ms.
    pub rtt_ms: f64,
    /// The node's stratum: 1 master, 2 synced follower, 16 never synced.
    pub stratum: u8,
    /// Harness wall clock (Unix ms) at the middle of the exchange: the node's
    /// cluster time at that moment was `at_ms + offset_ms`.
    #[serde(default)]
    pub at_ms: f64,
}

impl Sample {
    /// The node's cluster time (Unix ms) at `at_ms`, ± rtt/2.
    pub fn cluster_ms(&self) -> f64 {
        self.at_ms + self.offset_ms
    }
}

/// A client request: LI 0, version 4, mode 3, transmit timestamp `t1_us`.
pub fn request(t1_us: i64) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 4 << 3 | 3;
    p[40..48].copy_from_slice(&to_ntp(t1_us).to_be_bytes());
    p
}

pub fn to_ntp(unix_us: i64) -> u64 {
    let secs = unix_us.div_euclid(1_000_000) + NTP_UNIX_DELTA;
    let frac = ((unix_us.rem_euclid(1_000_000) as u64) << 32) / 1_000_000;
    ((secs as u64) << 32) | frac
}

pub fn from_ntp(ts: u64) -> i64 {
    let secs = (ts >> 32) as i64 - NTP_UNIX_DELTA;
    let us = ((ts & 0xffff_ffff) * 1_000_000) >> 32;
    secs * 1_000_000 + us as i64
}

/// Offset and round trip from one reply received at `t4_us` (harness clock)
/// to a request sent at `t1_us`. None if the reply is not a server reply to
/// that request.
pub fn parse(reply: &[u8], t1_us: i64, t4_us: i64) -> Option<Sample> {
    if reply.len() < 48 || reply[0] & 7 != 4 {
        return None;
    }
    let ts = |i: usize| u64::from_be_bytes(reply[i..i + 8].try_into().unwrap());
    if ts(24) != to_ntp(t1_us) {
        return None; // not the answer to this request
    }
    let t2 = from_ntp(ts(32));
    let t3 = from_ntp(ts(40));
    let offset_us = ((t2 - t1_us) + (t3 - t4_us)) as f64 / 2.0;
    let rtt_us = ((t4_us - t1_us) - (t3 - t2)).max(0) as f64;
    Some(Sample {
        offset_ms: offset_us / 1000.0,
        rtt_ms: rtt_us / 1000.0,
        stratum: reply[1],
        at_ms: (t1_us + t4_us) as f64 / 2000.0,
    })
}

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Asks `ip:port` `samples` times (each waiting at most `timeout`) and keeps
/// the sample with the smallest round trip, as NTP clients do.
pub fn probe(ip: &str, port: u16, samples: usize, timeout: Duration) -> Result<Sample, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    sock.connect((ip, port)).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut best: Option<Sample> = None;
    let mut last_err = String::from("no sample");
    let mut buf = [0u8; 512];
    for _ in 0..samples.max(1) {
        let t1 = wall_us();
        if let Err(e) = sock.send(&request(t1)) {
            last_err = format!("send: {e}");
            continue;
        }
        // Skip late replies to earlier requests (origin mismatch).
        let got = loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let t4 = wall_us();
                    if let Some(s) = parse(&buf[..n], t1, t4) {
                        break Some(s);
                    }
                }
                Err(e) => {
                    last_err = format!("recv: {e}");
                    break None;
                }
            }
        };
        if let Some(s) = got {
            if best.is_none_or(|b| s.rtt_ms < b.rtt_ms) {
                best = Some(s);
            }
        }
    }
    best.ok_or(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(origin: u64, t2_us: i64, t3_us: i64, stratum: u8) -> [u8; 48] {
        let mut p = [0u8; 48];
        p[0] = 4 << 3 | 4;
        p[1] = stratum;
        p[24..32].copy_from_slice(&origin.to_be_bytes());
        p[32..40].copy_from_slice(&to_ntp(t2_us).to_be_bytes());
        p[40..48].copy_from_slice(&to_ntp(t3_us).to_be_bytes());
        p
    }

    /// Proves NTP timestamps round-trip to the microsecond and the request
    /// is a version-4 client packet carrying its send time.
    #[test]
    fn sntp_timestamps_round_trip() {
        for us in [0i64, 1, 999_999, 1_795_257_256_123_456] {
            assert!((from_ntp(to_ntp(us)) - us).abs() <= 1, "{us}");
        }
        let r = request(1_000_000);
        assert_eq!(r[0], 0x23);
        assert_eq!(u64::from_be_bytes(r[40..48].try_into().unwrap()), to_ntp(1_000_000));
    }

    /// Proves the offset/round-trip formulas: a server 50 ms ahead that
    /// holds the request 2 ms, over a 10 ms network round trip, measures
    /// +50 ms with a 10 ms round trip; a reply to another request is ignored.
    #[test]
    fn sntp_offset_and_rtt() {
        let t1 = 1_700_000_000_000_000;
        // 5 ms each way; server is +50 ms; processing 2 ms.
        let t2 = t1 + 5_000 + 50_000;
        let t3 = t2 + 2_000;
        let t4 = t1 + 12_000;
        let s = parse(&reply(to_ntp(t1), t2, t3, 2), t1, t4).unwrap();
        assert!((s.offset_ms - 50.0).abs() < 0.01, "{s:?}");
        assert!((s.rtt_ms - 10.0).abs() < 0.01, "{s:?}");
        assert_eq!(s.stratum, 2);
        assert!((s.cluster_ms() - ((t1 + 6_000) as f64 / 1000.0 + 50.0)).abs() < 0.01);
        assert!(parse(&reply(to_ntp(t1 - 1), t2, t3, 2), t1, t4).is_none());
        assert!(parse(&[0u8; 10], t1, t4).is_none());
    }
}
