//! `herald connect`: a session that prints each message as one JSON line,
//! acknowledges it, heartbeats, and reconnects through another gateway
//! when its gateway fails.

use std::io::Write;

use clap::Args;
use herald_client::session::{Session, SessionConfig, SessionEvent};
use herald_client::ClientError;

use super::Ctx;

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[arg(long)]
    pub uid: String,
    /// Session token (`herald token issue`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the session token (instead of --token).
    #[arg(long, env = "HERALD_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Client type; presence is per client type.
    #[arg(long, default_value = "app")]
    pub client: String,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// More nodes to ask for a gateway when --node is down.
    #[arg(long = "seed", value_name = "ADDR")]
    pub seeds: Vec<String>,
    /// Do not acknowledge (messages stay stored and come again).
    #[arg(long)]
    pub no_ack: bool,
    /// Print session events (connected, disconnected) on stderr.
    #[arg(long)]
    pub verbose: bool,
}

pub async fn run(ctx: &Ctx, a: ConnectArgs) -> Result<(), ClientError> {
    let mut seeds = vec![ctx.node.clone()];
    seeds.extend(a.seeds);
    let token =
        herald_client::Credential::token_from_sources(a.token.as_deref(), a.token_file.as_deref())?;
    let mut cfg = SessionConfig::new(seeds, a.uid, token);
    cfg.client = a.client;
    cfg.tls = ctx.opts.clone();
    let mut s = Session::connect(cfg).await?;
    let mut n = 0u64;
    if a.count == Some(0) {
        return Ok(());
    }
    while let Some(ev) = s.recv().await {
        match ev {
            SessionEvent::Message(m) => {
                let line = serde_json::to_string(&m)
                    .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
                {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                if !a.no_ack {
                    s.ack(vec![m.id]).await;
                }
                n += 1;
                if a.count.is_some_and(|c| n >= c) {
                    // Give the ack a moment to leave before the session ends.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    return Ok(());
                }
            }
            SessionEvent::Connected { node, session, queued } => {
                if a.verbose {
                    eprintln!("connected: node {node}, session {session}, {queued} queued");
                }
            }
            SessionEvent::Disconnected { code, message, fatal } => {
                if fatal {
                    return Err(ClientError::Server { code, message });
                }
                if a.verbose {
                    eprintln!("disconnected: {code}: {message}; reconnecting");
                }
            }
        }
    }
    Ok(())
}
