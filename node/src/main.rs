//! heraldd: runs one node of a Herald cluster from an XML file.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use herald_node::config::{self, Overrides};

/// A status-publish node of a Herald cluster.
#[derive(Parser, Debug)]
#[command(name = "heraldd", version, about)]
struct Args {
    /// XML configuration of this node; without it, the embedded default
    /// (conf/herald.xml: a single node on 127.0.0.1).
    #[arg(long, short = 'c', env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Override the data directory of the XML file.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override this node's sync port (Raft traffic).
    #[arg(long)]
    sync_port: Option<u16>,
    /// Override this node's time port (SNTP).
    #[arg(long)]
    time_port: Option<u16>,
    /// Override this node's publish port (gRPC + HTTP).
    #[arg(long)]
    publish_port: Option<u16>,
    /// Parse and validate the configuration, print it, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The configuration is read before the log starts (it says the log's
    // format); an error in it is printed by main's error return.
    let mut cfg = match &args.config {
        Some(p) => config::load(p)?,
        None => config::parse(config::EMBEDDED_DEFAULT, config::EMBEDDED_NAME)?,
    };
    herald_node::logging::init(cfg.log.format, &cfg.cluster, cfg.node);
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        sync_port: args.sync_port,
        time_port: args.time_port,
        publish_port: args.publish_port,
    };
    for line in cfg.apply_overrides(&overrides)? {
        tracing::info!(source = %cfg.source, "{line}");
    }
    if args.check {
        println!("{cfg:#?}");
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    rt.block_on(herald_node::app::run(cfg, shutdown_signal()))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
