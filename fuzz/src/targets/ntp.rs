//! The NTP packet a time port receives (`herald_node::time::ntp`).

use herald_node::time::ntp::{self, Packet, PacketError, PACKET_LEN};

use super::{Seed, Target};

pub const TARGET: Target = Target {
    name: "ntp",
    about: "NTP packet: herald_node::time::ntp::Packet::decode, encode round trip, from_ntp",
    run,
    seeds,
    dict: Vec::new,
    selftest: false,
};

/// A local clock to convert timestamps around (2023-11-14).
const PIVOT_US: i64 = 1_700_000_000_000_000;

fn run(input: &[u8]) {
    match Packet::decode(input) {
        Ok(p) => {
            assert!(input.len() >= PACKET_LEN);
            // Every header field is kept whole: encoding gives the bytes back.
            assert_eq!(p.encode()[..], input[..PACKET_LEN], "decode then encode is the identity");
            for ts in [p.reference_ts, p.origin_ts, p.receive_ts, p.transmit_ts] {
                for pivot in [PIVOT_US, 0, -PIVOT_US, 4 * PIVOT_US] {
                    let _ = ntp::from_ntp(ts, pivot);
                }
            }
        }
        Err(PacketError::Short(n)) => assert!(n == input.len() && n < PACKET_LEN),
    }
}

fn seeds() -> Vec<Seed> {
    let client = Packet {
        version: 4,
        mode: ntp::MODE_CLIENT,
        transmit_ts: ntp::to_ntp(PIVOT_US),
        ..Packet::default()
    };
    let server = Packet {
        leap: 0,
        version: 4,
        mode: ntp::MODE_SERVER,
        stratum: 1,
        poll: 4,
        precision: -20,
        root_delay: ntp::to_short(1_500),
        root_dispersion: ntp::to_short(10_000),
        reference_id: *b"LOCL",
        reference_ts: ntp::to_ntp(PIVOT_US - 1_000_000),
        origin_ts: ntp::to_ntp(PIVOT_US),
        receive_ts: ntp::to_ntp(PIVOT_US + 150),
        transmit_ts: ntp::to_ntp(PIVOT_US + 170),
    };
    let unsync = Packet { leap: ntp::LI_UNSYNC, version: 3, mode: ntp::MODE_SERVER, ..server };
    let mut extended = server.encode().to_vec();
    extended
        .extend_from_slice(&[0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    vec![
        Seed::new("client", client.encode()),
        Seed::new("server", server.encode()),
        Seed::new("unsync", unsync.encode()),
        Seed::new("extension", extended),
        Seed::new("short", &server.encode()[..47]),
    ]
}
