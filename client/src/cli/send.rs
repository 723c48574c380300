//! `herald send`, `herald groups`, `herald settings`, `herald gateway`:
//! what applications do with messages.

use clap::{Args, Subcommand};
use herald_client::messages::{new_idempotency_key, Outgoing, Recipients, SendOutcome};
use herald_client::ClientError;

use super::table::Table;
use super::Ctx;

/// `herald send --from A --to B [--to C] [--group G] [--broadcast] [--ttl 1h] TEXT`
#[derive(Args, Debug)]
pub struct SendArgs {
    /// Sender uid (or application name).
    #[arg(long)]
    pub from: String,
    /// Recipient uid; repeat for several.
    #[arg(long = "to", value_name = "UID")]
    pub to: Vec<String>,
    /// A named recipient group instead of --to.
    #[arg(long, conflicts_with_all = ["to", "broadcast"])]
    pub group: Option<String>,
    /// Every user (online ones, or with --ttl also those who log in before it ends).
    #[arg(long, conflicts_with_all = ["to", "group"])]
    pub broadcast: bool,
    /// Lifetime of a broadcast: 90s, 15m, 1h, 7d.
    #[arg(long, value_parser = super::token::parse_ttl, requires = "broadcast")]
    pub ttl: Option<u64>,
    /// Idempotency key; a retry with the same key is not stored twice.
    /// Default: a fresh random key.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long, default_value = "text/plain")]
    pub content_type: String,
    /// The message text.
    pub text: String,
}

pub async fn send(ctx: &Ctx, a: SendArgs) -> Result<(), ClientError> {
    let to = if a.broadcast {
        Recipients::Broadcast
    } else if let Some(g) = a.group {
        Recipients::Group(g)
    } else if !a.to.is_empty() {
        Recipients::To(a.to)
    } else {
        return Err(ClientError::InvalidArgument(
            "name recipients: --to UID, --group NAME or --broadcast".into(),
        ));
    };
    let m = Outgoing {
        idempotency_key: a.key.unwrap_or_else(new_idempotency_key),
        from: a.from,
        to,
        ttl_s: a.ttl.unwrap_or(0),
        content_type: a.content_type,
        body: a.text.into_bytes(),
    };
    let r = ctx.connect().await?.send(m).await?;
    ctx.out.print(&r, human)
}

fn human(r: &SendOutcome) -> String {
    let mut s = format!(
        "message {} at revision {}{}\n",
        r.message_id,
        r.revision,
        if r.duplicate { " (duplicate: answered from the first submission)" } else { "" }
    );
    if let Some(b) = &r.broadcast {
        s.push_str(&format!("broadcast: {b}"));
        if r.expires_at_ms > 0 {
            s.push_str(&format!(" until {} ms", r.expires_at_ms));
        }
        return s;
    }
    let mut t = Table::new(["RECIPIENT", "OUTCOME", "REASON"]);
    for o in &r.recipients {
        t.row([o.uid.clone(), o.outcome.clone(), o.reason.clone()]);
    }
    s.push_str(&t.to_string());
    s
}

/// Recipient groups.
#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// Create or replace a group.
    Set {
        name: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Show a group's members.
    Get { name: String },
    /// Delete a group.
    Delete { name: String },
}

pub async fn groups(ctx: &Ctx, c: GroupsCommand) -> Result<(), ClientError> {
    let client = ctx.connect().await?;
    match c {
        GroupsCommand::Set { name, members } => {
            let revision = client.set_group(&name, members.clone()).await?;
            let v = serde_json::json!({ "name": name, "members": members, "revision": revision });
            ctx.out.print(&v, |_| {
                format!("group {name}: {} members (revision {revision})", members.len())
            })
        }
        GroupsCommand::Get { name } => {
            let members = client.group(&name).await?;
            let v = serde_json::json!({ "name": name, "members": members });
            ctx.out.print(&v, |_| members.join("\n"))
        }
        GroupsCommand::Delete { name } => {
            client.group(&name).await?;
            let revision = client.set_group(&name, Vec::new()).await?;
            let v = serde_json::json!({ "name": name, "deleted": true, "revision": revision });
            ctx.out.print(&v, |_| format!("group {name} deleted (revision {revision})"))
        }
    }
}

/// `herald settings --uid U [--offline on|off]`
#[derive(Args, Debug)]
pub struct SettingsArgs {
    #[arg(long)]
    pub uid: String,
    /// Subscribe (on) or unsubscribe (off) the user from offline storage.
    #[arg(long, value_parser = ["on", "off"])]
    pub offline: Option<String>,
}

pub async fn settings(ctx: &Ctx, a: SettingsArgs) -> Result<(), ClientError> {
    let c = ctx.connect().await?;
    let s = match a.offline.as_deref() {
        Some(v) => c.set_offline(&a.uid, v == "on").await?,
        None => c.settings(&a.uid).await?,
    };
    ctx.out.print(&s, |s| {
        format!(
            "uid {}\noffline storage {}\nqueued {}",
            s.uid,
            if s.offline { "on" } else { "off" },
            s.queued
        )
    })
}

/// `herald gateway [--uid U]`
#[derive(Args, Debug)]
pub struct GatewayArgs {
    #[arg(long, default_value = "")]
    pub uid: String,
}

pub async fn gateway(ctx: &Ctx, a: GatewayArgs) -> Result<(), ClientError> {
    let r = ctx.connect().await?.pick_gateway(&a.uid, "").await?;
    ctx.out.print(&r, |r| {
        let mut t = Table::new(["NODE", "PUBLISH", "SESSIONS", "LOAD", "HEALTHY", "BEST"]);
        for g in &r.candidates {
            let best = r.best.as_ref().is_some_and(|b| b.node == g.node);
            t.row([
                g.node.to_string(),
                g.publish.clone(),
                g.sessions.to_string(),
                format!("{:.3}", g.load),
                g.healthy.to_string(),
                if best { "*".into() } else { String::new() },
            ]);
        }
        t.to_string()
    })
}
