//! `herald profile bind|unbind|set|get` and `herald outbox list|resend`:
//! profile sync across bound IM modules (issue 17). Profile commands act as
//! a user with `--token` (its own profile), else with the API key
//! (`profile` scope); outbox commands need the API key (`profile` to list,
//! `admin` to resend).

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use herald_client::profile::ProfileClient;
use herald_client::{ClientError, Credential};
use herald_proto::wire::profile::{BindingsAnswer, OutboxAnswer, Profile, ProfileAnswer};

use super::media::blocking;
use super::table::Table;
use super::Ctx;

/// The user a profile command is about, and how it authenticates.
#[derive(Args, Debug, Clone)]
pub struct ProfileUser {
    /// The user (Herald identity).
    #[arg(long, env = "HERALD_UID")]
    pub uid: String,
    /// Act as that user with its session token (else the API key is sent).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding that token (instead of --token).
    #[arg(long, env = "HERALD_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

impl ProfileUser {
    fn client(&self, ctx: &Ctx) -> Result<ProfileClient, ClientError> {
        let credential = if self.token.is_some() || self.token_file.is_some() {
            let t =
                Credential::token_from_sources(self.token.as_deref(), self.token_file.as_deref())?;
            Credential::user_token(&self.uid, &t)?
        } else {
            ctx.credential.clone()
        };
        ProfileClient::new(&ctx.node, credential, &ctx.opts)
    }
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Bind an account of a supported module to the user.
    Bind {
        /// The module id (as <profile-sync> lists it).
        module: String,
        /// The account in that module.
        account: String,
        #[command(flatten)]
        user: ProfileUser,
    },
    /// Unbind an account (its pending updates are dropped).
    Unbind {
        module: String,
        account: String,
        #[command(flatten)]
        user: ProfileUser,
    },
    /// Set the profile as changed in module SOURCE: every other bound account gets the update.
    Set {
        /// The module the change was made in (one the user has bound).
        source: String,
        #[arg(long, default_value = "")]
        avatar: String,
        #[arg(long, default_value = "")]
        signature: String,
        #[arg(long, default_value = "")]
        mood: String,
        /// Another setting, KEY=VALUE; repeat for several.
        #[arg(long = "extra", value_name = "KEY=VALUE")]
        extra: Vec<String>,
        #[command(flatten)]
        user: ProfileUser,
    },
    /// Show the profile, its revision and the bound accounts.
    Get {
        #[command(flatten)]
        user: ProfileUser,
    },
}

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// List pending updates (or, with --dead, the dead-letter list).
    List {
        #[arg(long)]
        dead: bool,
        /// At most this many items (the total is always shown).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Send an item again now (a dead one goes back to pending). Needs the admin scope.
    Resend {
        /// The item's id or webhook id (msg_N).
        id: String,
    },
}

fn parse_extra(extra: &[String]) -> Result<BTreeMap<String, String>, ClientError> {
    extra
        .iter()
        .map(|kv| {
            kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| {
                ClientError::InvalidArgument(format!("--extra {kv:?}: expected KEY=VALUE"))
            })
        })
        .collect()
}

pub async fn run(ctx: &Ctx, c: ProfileCommand) -> Result<(), ClientError> {
    match c {
        ProfileCommand::Bind { module, account, user } => {
            let client = user.client(ctx)?;
            let uid = user.uid.clone();
            let a = blocking(move || client.bind(&uid, &module, &account)).await?;
            ctx.out.print(&a, bindings_human)
        }
        ProfileCommand::Unbind { module, account, user } => {
            let client = user.client(ctx)?;
            let uid = user.uid.clone();
            let a = blocking(move || client.unbind(&uid, &module, &account)).await?;
            ctx.out.print(&a, bindings_human)
        }
        ProfileCommand::Set { source, avatar, signature, mood, extra, user } => {
            let client = user.client(ctx)?;
            let profile = Profile { avatar, signature, mood, extra: parse_extra(&extra)? };
            let uid = user.uid.clone();
            let a = blocking(move || client.set(&uid, &source, profile)).await?;
            ctx.out.print(&a, profile_human)
        }
        ProfileCommand::Get { user } => {
            let client = user.client(ctx)?;
            let uid = user.uid.clone();
            let a = blocking(move || client.get(&uid)).await?;
            ctx.out.print(&a, profile_human)
        }
    }
}

pub async fn outbox(ctx: &Ctx, c: OutboxCommand) -> Result<(), ClientError> {
    let client = ProfileClient::new(&ctx.node, ctx.credential.clone(), &ctx.opts)?;
    match c {
        OutboxCommand::List { dead, limit } => {
            let a = blocking(move || client.outbox(dead, limit)).await?;
            ctx.out.print(&a, outbox_human)
        }
        OutboxCommand::Resend { id } => {
            let a = blocking(move || client.resend(&id)).await?;
            ctx.out.print(&a, |a| format!("item {} is due now (revision {})", a.id, a.revision))
        }
    }
}

fn bindings_human(a: &BindingsAnswer) -> String {
    let mut t = Table::new(["MODULE", "ACCOUNT"]);
    for b in &a.bindings {
        t.row([b.module.clone(), b.account.clone()]);
    }
    format!("{} at revision {}:\n{t}", a.uid, a.revision)
}

fn profile_human(a: &ProfileAnswer) -> String {
    let mut out = match &a.profile {
        None => format!("{}: no profile set\n", a.uid),
        Some(p) => {
            let mut s = format!(
                "{} at revision {} (from {}):\n  avatar: {}\n  signature: {}\n  mood: {}\n",
                a.uid, a.revision, a.source, p.avatar, p.signature, p.mood
            );
            for (k, v) in &p.extra {
                s.push_str(&format!("  {k}: {v}\n"));
            }
            s
        }
    };
    let bound: Vec<String> =
        a.bindings.iter().map(|b| format!("{}:{}", b.module, b.account)).collect();
    out.push_str(&format!(
        "bound: {}\n",
        if bound.is_empty() { "none".into() } else { bound.join(", ") }
    ));
    if !a.outbox.is_empty() {
        out.push_str(&format!("queued for delivery: {}\n", a.outbox.join(", ")));
    }
    out
}

fn outbox_human(a: &OutboxAnswer) -> String {
    let mut t = Table::new([
        "ID",
        "USER",
        "TARGET",
        "REVISION",
        "ATTEMPTS",
        "NEXT/DEAD (ms)",
        "LAST ERROR",
    ]);
    for i in &a.items {
        t.row([
            i.webhook_id.clone(),
            i.uid.clone(),
            format!("{}:{}", i.module, i.account),
            i.revision.to_string(),
            i.attempts.to_string(),
            i.dead_ms.unwrap_or(i.next_attempt_ms).to_string(),
            i.last_error.clone(),
        ]);
    }
    let what = if a.dead { "dead-letter items" } else { "pending items" };
    format!("{} {what} ({} listed)\n{t}", a.total, a.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    /// profile set takes its fields and repeated --extra KEY=VALUE; a bad
    /// --extra is refused; outbox list takes --dead and resend an id.
    #[test]
    fn cli_parse_profile_and_outbox() {
        let c = Cli::try_parse_from([
            "herald", "profile", "set", "qq", "--mood", "happy", "--extra", "lang=zh", "--uid", "u",
        ])
        .unwrap();
        let Command::Profile(ProfileCommand::Set { source, mood, extra, user, .. }) = c.command
        else {
            panic!()
        };
        assert_eq!((source.as_str(), mood.as_str(), user.uid.as_str()), ("qq", "happy", "u"));
        assert_eq!(parse_extra(&extra).unwrap(), BTreeMap::from([("lang".into(), "zh".into())]));
        assert_eq!(parse_extra(&["x".into()]).unwrap_err().code(), "invalid_argument");
        let c = Cli::try_parse_from(["herald", "outbox", "list", "--dead"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Outbox(OutboxCommand::List { dead: true, limit: 1000 })
        ));
        let c = Cli::try_parse_from(["herald", "outbox", "resend", "msg_4"]).unwrap();
        assert!(
            matches!(c.command, Command::Outbox(OutboxCommand::Resend { id }) if id == "msg_4")
        );
    }
}
