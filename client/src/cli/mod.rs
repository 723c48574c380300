//! The `herald` command line: global flags, the subcommand tree, and running
//! one command. Each subcommand group lives in its own module; a new group
//! is a new module plus one variant of [`Command`].

mod bench;
mod cert;
mod cluster;
mod connect;
mod contacts;
mod group_send;
mod ids;
mod key;
mod media;
mod output;
mod presence;
mod profile;
mod progress;
mod send;
mod status;
mod table;
mod token;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use herald_client::{ClientError, ConnectOptions, Credential, HeraldClient};

/// Command-line client of a Herald presence cluster.
#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Command-line client of a Herald presence cluster",
    long_about = "Command-line client of a Herald presence cluster: push presence events, query \
                  presence, inspect the cluster and change its membership over gRPC; issue session tokens; \
                  upload, send and download media over HTTP (media, group-send, contacts, watch-folder).\n\n\
                  Errors go to stderr as `error: <code>: <message>` with a non-zero exit code; \
                  <code> is the server's stable snake_case code (no_leader, timeout, ...)."
)]
pub struct Cli {
    /// Publish address of the node to talk to (gRPC and HTTP share it): host:port, http://host:port, or https://host:port for TLS (needs --ca).
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "HERALD_NODE",
        default_value = "127.0.0.1:7103"
    )]
    pub node: String,
    /// PEM certificate(s) to trust for an https:// --node: the cluster's CA or its self-signed certificate.
    #[arg(long, global = true, value_name = "FILE", env = "HERALD_CA")]
    pub ca: Option<PathBuf>,
    /// An application's API key (hk_..., from `herald key new`), sent with every call; prefer HERALD_API_KEY or --api-key-file (a flag is visible to other local users).
    #[arg(long, global = true, value_name = "KEY", env = "HERALD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file holding the API key (surrounding whitespace is ignored).
    #[arg(long, global = true, value_name = "FILE", env = "HERALD_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Machine output: one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the cluster as the node sees it: leader, term, indexes, members.
    Status(status::StatusArgs),
    /// Push presence events (login, logout, permission) and query presence.
    #[command(subcommand)]
    Presence(presence::PresenceCommand),
    /// Change cluster membership: add a learner, promote it, remove a node.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Benchmark a running cluster (or etcd, for comparison): throughput, latency percentiles, errors, node memory.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Send a message to users, a recipient group, or everyone.
    Send(send::SendArgs),
    /// Open a session as a user: print each message as a JSON line, acknowledge it, heartbeat.
    Connect(connect::ConnectArgs),
    /// Recipient groups: set, get, delete.
    #[command(subcommand)]
    Groups(send::GroupsCommand),
    /// A user's offline-storage subscription and queue.
    Settings(send::SettingsArgs),
    /// Which gateway the cluster recommends, and every node's load.
    Gateway(send::GatewayArgs),
    /// Make the cluster CA and every node's certificate for mutual TLS between peers (<peer-tls>) from the nodes' XML files; prints the element to add to each.
    Cert(cert::CertArgs),
    /// Issue and check HMAC session tokens offline (the key of the nodes' <auth mode="hmac">).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Make application API keys for <access> (offline).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Media over HTTP: upload, download (resumable), info, delete, shared list.
    #[command(subcommand)]
    Media(media::MediaCommand),
    /// Upload a file (or name an uploaded media) and send it to your contacts by group.
    GroupSend(group_send::GroupSendArgs),
    /// Your contacts and their groups: add, remove, list.
    #[command(subcommand)]
    Contacts(contacts::ContactsCommand),
    /// Group-send every new file of a folder once, then move it to its sent/ subfolder.
    WatchFolder(watch::WatchArgs),
    /// Profile sync: bind module accounts, set and read a user's profile.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// The profile outbox: pending and dead-letter updates, resend.
    #[command(subcommand)]
    Outbox(profile::OutboxCommand),
}

/// What every command gets: where to connect and how to print.
pub struct Ctx {
    pub node: String,
    /// TLS settings for an https:// `node` (from `--ca`).
    pub opts: ConnectOptions,
    /// The API key of `--api-key`, `HERALD_API_KEY` or `--api-key-file`.
    pub credential: Credential,
    pub out: output::Output,
}

impl Ctx {
    /// Connects to `--node` (with `--ca` for https://), sending the API key.
    pub async fn connect(&self) -> Result<HeraldClient, ClientError> {
        Ok(HeraldClient::connect_with(&self.node, &self.opts)
            .await?
            .with_credential(self.credential.clone()))
    }
}

/// The connect options of the command line: the `--ca` file's contents.
fn connect_options(ca: Option<&std::path::Path>) -> Result<ConnectOptions, ClientError> {
    let ca_pem = match ca {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| ClientError::InvalidArgument(format!("--ca {}: {e}", p.display())))?,
        ),
        None => None,
    };
    Ok(ConnectOptions { ca_pem, domain: None })
}

/// Parses the command line, runs the command, reports an error on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: internal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), ClientError> {
    let opts = connect_options(cli.ca.as_deref())?;
    // `key new` and `token` talk to no node: a bad key setting is no reason to fail them.
    let offline = matches!(cli.command, Command::Key(_) | Command::Token(_) | Command::Cert(_));
    let credential =
        match Credential::from_sources(cli.api_key.as_deref(), cli.api_key_file.as_deref()) {
            Ok(c) => c,
            Err(_) if offline => Credential::none(),
            Err(e) => return Err(e),
        };
    let ctx = Ctx { node: cli.node, opts, credential, out: output::Output { json: cli.json } };
    match cli.command {
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Presence(c) => presence::run(&ctx, c).await,
        Command::Cluster(c) => cluster::run(&ctx, c).await,
        Command::Bench(c) => bench::run(&ctx, c).await,
        Command::Send(a) => send::send(&ctx, a).await,
        Command::Connect(a) => connect::run(&ctx, a).await,
        Command::Groups(c) => send::groups(&ctx, c).await,
        Command::Settings(a) => send::settings(&ctx, a).await,
        Command::Gateway(a) => send::gateway(&ctx, a).await,
        Command::Token(c) => token::run(&ctx, c),
        Command::Key(c) => key::run(&ctx, c),
        Command::Cert(a) => cert::run(&ctx, a),
        Command::Media(c) => media::run(&ctx, c).await,
        Command::GroupSend(a) => group_send::run(&ctx, a).await,
        Command::Contacts(c) => contacts::run(&ctx, c).await,
        Command::WatchFolder(a) => watch::run(&ctx, a).await,
        Command::Profile(c) => profile::run(&ctx, c).await,
        Command::Outbox(c) => profile::outbox(&ctx, c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The clap definition is internally consistent (no clashing flags,
    /// valid defaults), checked by clap's own debug assertions.
    #[test]
    fn cli_parse_definition_is_valid() {
        Cli::command().debug_assert();
    }

    /// `--node` defaults to the local single node, and the global flags are
    /// accepted after the subcommand too.
    #[test]
    fn cli_parse_global_flags() {
        let c = Cli::try_parse_from(["herald", "status"]).unwrap();
        // HERALD_NODE may be set in the environment running the tests.
        if std::env::var_os("HERALD_NODE").is_none() {
            assert_eq!(c.node, "127.0.0.1:7103");
        }
        assert!(!c.json);
        let c =
            Cli::try_parse_from(["herald", "status", "--json", "--node", "10.0.0.2:7203"]).unwrap();
        assert_eq!((c.node.as_str(), c.json), ("10.0.0.2:7203", true));
    }

    /// `--ca FILE` is a global flag; its file is read into the connect
    /// options, and an unreadable file is an `invalid_argument` naming it.
    #[test]
    fn cli_parse_ca_flag() {
        let c = Cli::try_parse_from([
            "herald",
            "status",
            "--node",
            "https://n1:7103",
            "--ca",
            "/x/ca.pem",
        ])
        .unwrap();
        assert_eq!(c.ca.as_deref(), Some(std::path::Path::new("/x/ca.pem")));
        let e = connect_options(c.ca.as_deref()).unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.message().contains("/x/ca.pem"), "{e}");

        let dir = std::env::temp_dir().join(format!("herald-cli-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ca.pem");
        std::fs::write(&f, "PEM").unwrap();
        let o = connect_options(Some(&f)).unwrap();
        assert_eq!(o.ca_pem.as_deref(), Some(&b"PEM"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(connect_options(None).unwrap(), ConnectOptions::default());
    }

    /// `--api-key` and `--api-key-file` are global flags; giving both is
    /// refused when a command connects.
    #[test]
    fn cli_parse_api_key_flags() {
        let c = Cli::try_parse_from(["herald", "status", "--api-key", "hk_x"]).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("hk_x"));
        let c = Cli::try_parse_from(["herald", "--api-key-file", "/k", "status"]).unwrap();
        assert_eq!(c.api_key_file.as_deref(), Some(std::path::Path::new("/k")));
        let e = Credential::from_sources(Some("hk_x"), Some(std::path::Path::new("/k")));
        assert_eq!(e.unwrap_err().code(), "invalid_argument");
    }

    /// A subcommand is required.
    #[test]
    fn cli_parse_requires_subcommand() {
        assert!(Cli::try_parse_from(["herald"]).is_err());
    }
}
