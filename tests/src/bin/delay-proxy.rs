//! `delay-proxy LISTEN=TARGET... --ms N --jitter-ms J`: runs
//! [`herald_tests::delay_proxy`] proxies by hand (a WAN between zones for
//! benchmarks, e.g. docs/benchmarks.md "Zones"), until killed. Loopback
//! only: every LISTEN and TARGET must be a 127.0.0.0/8 address.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use herald_tests::delay_proxy::{Delay, DelayProxy};

fn main() -> Result<()> {
    let mut links = Vec::new();
    let (mut ms, mut jitter_ms) = (0u64, 0u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ms" => ms = args.next().context("--ms N")?.parse()?,
            "--jitter-ms" => jitter_ms = args.next().context("--jitter-ms J")?.parse()?,
            link => {
                let (l, t) = link.split_once('=').context("LISTEN=TARGET")?;
                let (l, t): (SocketAddr, SocketAddr) = (l.parse()?, t.parse()?);
                for x in [l, t] {
                    if !x.ip().is_loopback() {
                        bail!("{x}: only loopback addresses");
                    }
                }
                links.push((l, t));
            }
        }
    }
    if links.is_empty() {
        bail!("usage: delay-proxy LISTEN=TARGET... [--ms N] [--jitter-ms J]");
    }
    let delay = Delay { ms, jitter_ms };
    let proxies: Vec<DelayProxy> =
        links.iter().map(|(l, t)| DelayProxy::start_on(*l, *t, delay)).collect::<Result<_>>()?;
    for p in &proxies {
        eprintln!("delay-proxy: {} ({ms} ± {jitter_ms} ms each way)", p.addr());
    }
    loop {
        std::thread::park();
    }
}
