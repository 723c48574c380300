//! Stage 3: rules across fields, shared by [`super::parse`] and
//! [`super::Config::apply_overrides`].

use std::collections::HashMap;

use super::xml::server_desc;
use super::{Config, Limits, MessagesConfig};

/// Which element a broken rule is blamed on.
pub(super) enum Site {
    Node,
    Server(u64),
    Raft,
}

impl Site {
    pub fn describe(&self) -> String {
        match self {
            Site::Node => "<node>".into(),
            Site::Server(n) => server_desc(*n),
            Site::Raft => "<raft>".into(),
        }
    }
}

/// A broken rule: at `site`, blamed on the first of `fields` that the element
/// spells out (or the first field if it spells out none).
pub(super) struct Problem {
    pub site: Site,
    pub fields: &'static [&'static str],
    pub message: String,
}

/// Cross-field rules. Port clashes are reported at the later server in list
/// order, or at server `prefer` when it is one of the two.
pub(super) fn check(c: &Config, prefer: Option<u64>) -> Result<(), Problem> {
    let mut used: HashMap<(String, u16), (u64, &'static str)> = HashMap::new();
    for s in &c.servers {
        let ports = [
            ("sync-port", s.sync_port),
            ("time-port", s.time_port),
            ("publish-port", s.publish_port),
        ];
        for (field, port) in ports {
            let key = (s.host.to_ascii_lowercase(), port);
            if let Some(&(other, other_field)) = used.get(&key) {
                let (at, at_field, by, by_field) = if prefer == Some(other) {
                    (other, other_field, s.number, field)
                } else {
                    (s.number, field, other, other_field)
                };
                return Err(Problem {
                    site: Site::Server(at),
                    fields: port_field(at_field),
                    message: format!("duplicate port {port} (also used by server {by} {by_field})"),
                });
            }
            used.insert(key, (s.number, field));
        }
    }

    if !c.servers.iter().any(|s| s.number == c.node) {
        let mut numbers: Vec<u64> = c.servers.iter().map(|s| s.number).collect();
        numbers.sort_unstable();
        let list: Vec<String> = numbers.iter().map(u64::to_string).collect();
        return Err(Problem {
            site: Site::Node,
            fields: &["number"],
            message: format!(
                "node {} is not in the server list (servers: {})",
                c.node,
                list.join(", ")
            ),
        });
    }

    let r = &c.raft;
    if r.election_min_ms >= r.election_max_ms {
        return Err(Problem {
            site: Site::Raft,
            fields: &["election-min-ms", "election-max-ms"],
            message: format!(
                "election-min-ms ({}) must be less than election-max-ms ({})",
                r.election_min_ms, r.election_max_ms
            ),
        });
    }
    if r.heartbeat_ms >= r.election_min_ms {
        return Err(Problem {
            site: Site::Raft,
            fields: &["heartbeat-ms", "election-min-ms"],
            message: format!(
                "heartbeat-ms ({}) must be less than election-min-ms ({})",
                r.heartbeat_ms, r.election_min_ms
            ),
        });
    }
    Ok(())
}

/// `<messages max-body-bytes>` must be less than `<limits
/// max-request-bytes>`; the message saying why when it is not.
pub(super) fn body_vs_request(m: &MessagesConfig, l: &Limits) -> Option<String> {
    (m.max_body_bytes >= l.max_request_bytes).then(|| {
        format!(
            "max-body-bytes ({}) must be less than <limits max-request-bytes> ({}): \
             the JSON or gRPC request that submits a message carries its body",
            m.max_body_bytes, l.max_request_bytes
        )
    })
}

/// The voters of `servers`: at least one; with `zone_survival`, a
/// majority of them left whichever one zone is lost. The message saying
/// why when not.
pub(super) fn voters(servers: &[super::Server], zone_survival: bool) -> Option<String> {
    use std::collections::BTreeMap;
    let voters: Vec<&super::Server> =
        servers.iter().filter(|s| s.role == super::ServerRole::Voter).collect();
    if voters.is_empty() {
        return Some("at least one <server> must be a voter (role=\"voter\", the default)".into());
    }
    if !zone_survival {
        return None;
    }
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &voters {
        *per_zone.entry(v.zone.as_str()).or_default() += 1;
    }
    let n = voters.len();
    let majority = n / 2 + 1;
    for (zone, k) in &per_zone {
        if n - k < majority {
            let layout: Vec<String> = per_zone.iter().map(|(z, k)| format!("{z}: {k}")).collect();
            return Some(format!(
                "zone-survival: losing zone {zone:?} leaves {} of {n} voters, less than the \
                 majority of {majority} (voters per zone: {}); spread the voters over at \
                 least three zones, none holding half of them",
                n - k,
                layout.join(", ")
            ));
        }
    }
    None
}

fn port_field(name: &str) -> &'static [&'static str] {
    match name {
        "sync-port" => &["sync-port"],
        "time-port" => &["time-port"],
        _ => &["publish-port"],
    }
}
