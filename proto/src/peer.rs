//! How a node is named in its sync-port certificate (issue 14, mutual TLS
//! between peers): one DNS name per node, `node<N>.<cluster>.herald`, shared
//! by the node (which checks it) and `herald cert` (which writes it).

/// Longest DNS label (RFC 1035): the cluster part of a node's name is cut
/// to it, or the name would be refused as a DNS name.
pub const MAX_DNS_LABEL: usize = 63;

/// The DNS label a cluster name becomes: lower case, every character other
/// than `a-z`, `0-9` and `-` replaced by `-`, no `-` at either end, at most
/// [`MAX_DNS_LABEL`] characters, and `cluster` when nothing is left.
pub fn cluster_label(cluster: &str) -> String {
    let mapped: String = cluster
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    let mut label: String = mapped.trim_matches('-').chars().take(MAX_DNS_LABEL).collect();
    while label.ends_with('-') {
        label.pop();
    }
    if label.is_empty() {
        label.push_str("cluster");
    }
    label
}

/// The DNS name node `number` of `cluster` holds in its certificate and is
/// checked against: `node<N>.<cluster label>.herald`.
pub fn node_name(cluster: &str, number: u64) -> String {
    format!("node{number}.{}.herald", cluster_label(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cluster names become valid DNS labels: lowered, other characters
    /// replaced, trimmed, cut to 63, never empty; the node name puts the
    /// number first.
    #[test]
    fn peer_node_name_is_a_dns_name() {
        assert_eq!(node_name("herald-local", 3), "node3.herald-local.herald");
        assert_eq!(cluster_label("Prod_EU 1"), "prod-eu-1");
        assert_eq!(cluster_label("--a.b--"), "a-b");
        assert_eq!(cluster_label("__"), "cluster");
        let long = "x".repeat(62) + "-yz";
        assert_eq!(cluster_label(&long), "x".repeat(62));
        assert!(cluster_label(&"a".repeat(200)).len() == MAX_DNS_LABEL);
    }
}
