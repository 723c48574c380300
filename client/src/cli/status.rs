//! `herald status`.

use clap::Args;
use herald_client::{ClientError, Status};

use super::output::nodes_table;
use super::Ctx;

/// Arguments of `herald status` (none yet).
#[derive(Args, Debug)]
pub struct StatusArgs {}

pub async fn run(ctx: &Ctx, _args: StatusArgs) -> Result<(), ClientError> {
    let s = ctx.connect().await?.status().await?;
    ctx.out.print(&s, human)
}

fn human(s: &Status) -> String {
    let leader = s.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
    let or_none = |x: Option<u64>| x.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
    format!(
        "cluster      {}\nnode         {} ({})\nleader       {}\nmaster       {}\ntime master  {}\nterm         {}\ncommit       {}\napplied      {}\npeers        {}\n\n{}",
        s.cluster,
        s.node,
        s.state,
        leader,
        or_none(s.master),
        or_none(s.time_master),
        s.term,
        s.commit_index,
        s.applied_index,
        if s.peer_tls {
            "mutual TLS"
        } else {
            "PLAINTEXT (development: anyone who reaches the sync port can act as a member)"
        },
        nodes_table(&s.nodes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    /// `status` takes no arguments of its own.
    #[test]
    fn cli_parse_status() {
        assert!(Cli::try_parse_from(["herald", "status"]).is_ok());
        assert!(Cli::try_parse_from(["herald", "status", "extra"]).is_err());
    }

    /// The human form names the cluster, this node and its state, the
    /// leader (or `none`), term and indexes, whether peers use mutual TLS
    /// (plaintext said loudly), then the members.
    #[test]
    fn cli_output_status_human() {
        let s = Status {
            cluster: "c".into(),
            node: 2,
            state: "follower".into(),
            leader: None,
            master: None,
            time_master: Some(1),
            term: 3,
            last_log_index: 0,
            commit_index: 10,
            applied_index: 9,
            snapshot_index: None,
            nodes: vec![],
            peer_tls: false,
            media: None,
        };
        let h = human(&s);
        assert!(
            h.starts_with("cluster      c\nnode         2 (follower)\nleader       none\nmaster       none\ntime master  1\nterm         3\ncommit       10\napplied      9\npeers        PLAINTEXT (development"),
            "{h}"
        );
        let tls = human(&Status { peer_tls: true, ..s.clone() });
        assert!(tls.contains("\npeers        mutual TLS\n"), "{tls}");
        assert!(h.ends_with("NUMBER  SYNC  PUBLISH  ROLE  ZONE  HEALTHY  MATCHED  LAG  LAG MS  CLOCK OFFSET  RTT  IN TOL  LAST SYNC  MEDIA"), "{h}");
    }
}
