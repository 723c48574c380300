//! `herald cluster ...`: membership changes. Any member may be asked; a
//! follower forwards to the leader.

use clap::{Args, Subcommand};
use herald_client::{ClientError, Membership};

use super::output::nodes_table;
use super::Ctx;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Add a node as a non-voting learner (addresses default to the node's entry in the server XML).
    AddLearner(AddLearnerArgs),
    /// Add a node as a replica: a non-voting member kept as one (never promoted by the cluster), serving reads in its zone.
    AddReplica(AddReplicaArgs),
    /// Make a learner a voting member.
    Promote(NodeArg),
    /// Remove a node from the cluster.
    Remove(NodeArg),
}

/// `cluster add-learner`.
#[derive(Args, Debug)]
pub struct AddLearnerArgs {
    /// Node number.
    pub number: u64,
    /// Sync (Raft) address of the node, if it is not in the servers' XML.
    #[arg(long, value_name = "HOST:PORT")]
    pub sync: Option<String>,
    /// Publish (gRPC + HTTP) address of the node, if it is not in the servers' XML.
    #[arg(long, value_name = "HOST:PORT")]
    pub publish: Option<String>,
}

/// `cluster add-replica`.
#[derive(Args, Debug)]
pub struct AddReplicaArgs {
    #[command(flatten)]
    pub node: AddLearnerArgs,
    /// The replica's data center [default: its zone in the servers' XML, else "default"].
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
}

/// A node number.
#[derive(Args, Debug)]
pub struct NodeArg {
    /// Node number.
    pub number: u64,
}

pub async fn run(ctx: &Ctx, cmd: ClusterCommand) -> Result<(), ClientError> {
    let c = ctx.connect().await?;
    let m = match cmd {
        ClusterCommand::AddLearner(a) => c.add_learner(a.number, a.sync, a.publish).await?,
        ClusterCommand::AddReplica(a) => {
            c.add_replica(a.node.number, a.node.sync, a.node.publish, a.zone).await?
        }
        ClusterCommand::Promote(a) => c.promote(a.number).await?,
        ClusterCommand::Remove(a) => c.remove(a.number).await?,
    };
    ctx.out.print(&m, human)
}

fn human(m: &Membership) -> String {
    format!("revision {}\n\n{}", m.revision, nodes_table(&m.nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ClusterCommand, clap::Error> {
        let mut v = vec!["herald", "cluster"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::Cluster(c) => Ok(c),
            other => panic!("not cluster: {other:?}"),
        }
    }

    /// `add-learner` takes a number and optional addresses.
    #[test]
    fn cli_parse_add_learner() {
        let ClusterCommand::AddLearner(a) = parse(&["add-learner", "4"]).unwrap() else { panic!() };
        assert_eq!((a.number, a.sync, a.publish), (4, None, None));
        let ClusterCommand::AddLearner(a) =
            parse(&["add-learner", "4", "--sync", "h:7401", "--publish", "h:7403"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((a.sync.as_deref(), a.publish.as_deref()), (Some("h:7401"), Some("h:7403")));
        assert!(parse(&["add-learner"]).is_err());
        assert!(parse(&["add-learner", "four"]).is_err());
    }

    /// `add-replica` takes what add-learner takes plus an optional zone.
    #[test]
    fn cli_parse_add_replica() {
        let ClusterCommand::AddReplica(a) = parse(&["add-replica", "5", "--zone", "dc4"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((a.node.number, a.zone.as_deref(), a.node.sync), (5, Some("dc4"), None));
        let ClusterCommand::AddReplica(a) = parse(&["add-replica", "6"]).unwrap() else { panic!() };
        assert_eq!((a.node.number, a.zone), (6, None));
        assert!(parse(&["add-replica", "--zone", "dc4"]).is_err());
    }

    /// `promote` and `remove` take one node number.
    #[test]
    fn cli_parse_promote_remove() {
        assert!(matches!(
            parse(&["promote", "2"]).unwrap(),
            ClusterCommand::Promote(NodeArg { number: 2 })
        ));
        assert!(matches!(
            parse(&["remove", "3"]).unwrap(),
            ClusterCommand::Remove(NodeArg { number: 3 })
        ));
        assert!(parse(&["remove"]).is_err());
    }
}
