//! `herald watch-folder DIR --period 10m --group friends [--text T]
//! [--settle 2s] [--once]`: group-send every new file of DIR once, then
//! move it to DIR/sent/ (the logic: [`herald_client::watch`]).
//!
//! One line per file on stdout (`--json`: one JSON object per line);
//! per-file errors on stderr. Ctrl-C stops between files (a second Ctrl-C
//! exits at once; the journal makes that safe too).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use herald_client::watch::{parse_duration, Delivery, WatchConfig, WatchEvent, Watcher};
use herald_client::ClientError;

use super::media::{blocking, UserArgs};
use super::Ctx;

/// `watch-folder`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The folder to watch (not recursive).
    pub dir: PathBuf,
    /// Time between scans: 500ms, 30s, 10m, 1h, 1h30m.
    #[arg(long, value_parser = parse_period, default_value = "10m")]
    pub period: Duration,
    /// Contact group to send to; repeat for several. None: all contacts.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Text sent with each file.
    #[arg(long)]
    pub text: Option<String>,
    /// How long a file's size and modification time must stay unchanged before it is sent.
    #[arg(long, value_parser = parse_settle, default_value = "2s")]
    pub settle: Duration,
    /// One pass (observing twice, the settle time apart), then exit; fails if a send failed.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub user: UserArgs,
}

/// `--period`: a duration above zero.
fn parse_period(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: the period must be more than 0"));
    }
    Ok(d)
}

/// `--settle`: any duration (0 = unchanged across two scans is enough).
fn parse_settle(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

pub async fn run(ctx: &Ctx, a: WatchArgs) -> Result<(), ClientError> {
    let client = a.user.client(ctx)?;
    let cfg = WatchConfig {
        dir: a.dir,
        uid: a.user.uid.clone(),
        groups: a.groups.clone(),
        text: a.text.clone().filter(|t| !t.is_empty()),
        settle: a.settle,
    };
    let (groups, text) = (cfg.groups.clone(), cfg.text.clone());
    let sender = move |path: &Path, key: &str| -> Result<Delivery, ClientError> {
        let up = client.upload(path, None, None, |_, _| {})?;
        let ans = client.group_send(&up.media_id, text.as_deref(), &groups, key)?;
        Ok(Delivery {
            media_id: up.media_id,
            recipients: ans.recipients.len(),
            duplicate: ans.duplicate,
        })
    };
    let mut watcher = Watcher::open(cfg, sender)?;

    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            s2.store(true, Ordering::SeqCst);
            eprintln!("stopping after the current file (Ctrl-C again to quit now)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let (json, once, period) = (ctx.out.json, a.once, a.period);
    let result = blocking(move || {
        let mut on_event = |e: &WatchEvent| print_event(e, json);
        let mut on_error = |e: &ClientError| eprintln!("error: {e}");
        watcher.run(period, once, &stop, &mut on_event, &mut on_error)
    })
    .await;
    signals.abort();
    let report = result?;
    if once && report.failed > 0 {
        return Err(ClientError::Transport(format!(
            "{} file(s) could not be sent; they stay in the folder",
            report.failed
        )));
    }
    Ok(())
}

/// One line per event: sent and moved files on stdout, failures on
/// stderr.
fn print_event(e: &WatchEvent, json: bool) {
    let line = match (e, json) {
        (WatchEvent::Failed { name, error }, false) => {
            eprintln!("error: {name}: {error}");
            return;
        }
        (WatchEvent::Failed { name, error }, true) => {
            serde_json::json!({"event": "failed", "name": name, "code": error.code(), "message": error.message()}).to_string()
        }
        (WatchEvent::Sent { name, media_id, recipients, duplicate, moved_to }, false) => format!(
            "sent {name} media {media_id} to {recipients} recipient(s){}; moved to {}",
            if *duplicate { " (duplicate: sent before)" } else { "" },
            moved_to.display()
        ),
        (WatchEvent::Sent { name, media_id, recipients, duplicate, moved_to }, true) => serde_json::json!({
            "event": "sent", "name": name, "media_id": media_id, "recipients": recipients,
            "duplicate": duplicate, "moved_to": moved_to,
        })
        .to_string(),
        (WatchEvent::AlreadySent { name, moved_to }, false) => format!("already sent {name}; moved to {}", moved_to.display()),
        (WatchEvent::AlreadySent { name, moved_to }, true) => {
            serde_json::json!({"event": "already_sent", "name": name, "moved_to": moved_to}).to_string()
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<WatchArgs, clap::Error> {
        let mut v = vec!["herald", "watch-folder", "--uid", "alice", "--token", "t"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::WatchFolder(a) => Ok(a),
            other => panic!("not watch-folder: {other:?}"),
        }
    }

    /// Defaults (10m period, 2s settle), units, --once and repeated
    /// --group parse; a zero or unitless period is refused.
    #[test]
    fn cli_parse_watch_folder() {
        let a = parse(&["/tmp/in"]).unwrap();
        assert_eq!(
            (a.period, a.settle, a.once),
            (Duration::from_secs(600), Duration::from_secs(2), false)
        );
        let a = parse(&[
            "/tmp/in", "--period", "30s", "--settle", "500ms", "--group", "friends", "--group",
            "family", "--once", "--text", "hi",
        ])
        .unwrap();
        assert_eq!(
            (a.period, a.settle, a.once, a.groups.len()),
            (Duration::from_secs(30), Duration::from_millis(500), true, 2)
        );
        assert!(parse(&["/tmp/in", "--period", "0s"]).is_err());
        assert!(parse(&["/tmp/in", "--period", "10"]).is_err());
        assert!(parse(&[]).is_err());
    }
}
