//! `herald group-send FILE|--media-id ID [--group G]... [--text T]`:
//! upload a file (with a progress bar) and send it to contacts by group.
//!
//! The idempotency key is derived from what is sent
//! ([`group_send_key`]: uid, the file's SHA-256 or the media id, sorted
//! groups, text), so running the same command again is answered
//! `duplicate` by the cluster instead of sending twice.

use std::path::PathBuf;

use clap::Args;
use herald_client::media::{file_sha256, group_send_key, GroupSendAnswer, UploadAnswer};
use herald_client::ClientError;
use serde::Serialize;

use super::media::{blocking, upload, UserArgs};
use super::table::Table;
use super::Ctx;

/// `group-send`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["file", "media_id"])))]
pub struct GroupSendArgs {
    /// The file to upload and send.
    pub file: Option<PathBuf>,
    /// Send an already uploaded media instead of a file.
    #[arg(long, value_name = "ID")]
    pub media_id: Option<String>,
    /// Contact group to send to; repeat for several. None: all contacts.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Text sent with the media.
    #[arg(long)]
    pub text: Option<String>,
    /// Content type of FILE (default: guessed from the extension).
    #[arg(long = "type", value_name = "MIME", conflicts_with = "media_id")]
    pub content_type: Option<String>,
    /// Name shown to recipients (default: the file's name).
    #[arg(long, conflicts_with = "media_id")]
    pub name: Option<String>,
    #[command(flatten)]
    pub user: UserArgs,
}

/// What `group-send --json` prints: the upload (when a file was given),
/// the key used, and the group-send answer.
#[derive(Debug, Serialize)]
pub struct GroupSendOutput {
    pub idempotency_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadAnswer>,
    #[serde(flatten)]
    pub answer: GroupSendAnswer,
}

pub async fn run(ctx: &Ctx, a: GroupSendArgs) -> Result<(), ClientError> {
    let client = a.user.client(ctx)?;
    let uid = a.user.uid.clone();
    let text = a.text.filter(|t| !t.is_empty());
    let (media_id, key, upload_answer) = match (a.file, a.media_id) {
        (Some(file), None) => {
            let f = file.clone();
            let sha = blocking(move || file_sha256(&f)).await?;
            let key = group_send_key(&uid, &sha, &a.groups, text.as_deref());
            let up = upload(ctx, client.clone(), file, a.content_type, a.name).await?;
            (up.media_id.clone(), key, Some(up))
        }
        (None, Some(id)) => {
            let key = group_send_key(&uid, &id, &a.groups, text.as_deref());
            (id, key, None)
        }
        _ => return Err(ClientError::InvalidArgument("give FILE or --media-id ID".into())),
    };
    let (groups, k) = (a.groups, key.clone());
    let answer =
        blocking(move || client.group_send(&media_id, text.as_deref(), &groups, &k)).await?;
    let out = GroupSendOutput { idempotency_key: key, upload: upload_answer, answer };
    ctx.out.print(&out, human)
}

fn human(o: &GroupSendOutput) -> String {
    let a = &o.answer;
    let mut s = String::new();
    if let Some(u) = &o.upload {
        s.push_str(&format!(
            "uploaded {} ({} bytes{})\n",
            u.media_id,
            u.size,
            if u.duplicate { ", already stored" } else { "" }
        ));
    }
    s.push_str(&format!(
        "message {} of media {} at revision {}{}\n",
        a.message_id,
        a.media_id,
        a.revision,
        if a.duplicate {
            " (duplicate: this send was made before; nothing sent again)"
        } else {
            ""
        }
    ));
    let mut t = Table::new(["RECIPIENT", "OUTCOME", "REASON"]);
    for r in &a.recipients {
        t.row([r.uid.clone(), r.outcome.clone(), r.reason.clone()]);
    }
    s.push_str(&t.to_string());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use herald_client::messages::RecipientOutcome;

    fn parse(args: &[&str]) -> Result<GroupSendArgs, clap::Error> {
        let mut v = vec!["herald", "group-send", "--uid", "alice", "--token", "t"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::GroupSend(a) => Ok(a),
            other => panic!("not group-send: {other:?}"),
        }
    }

    /// FILE or --media-id, exactly one; --group repeats; --type and --name
    /// go with FILE only.
    #[test]
    fn cli_parse_group_send() {
        let a = parse(&["beach.jpg", "--group", "friends", "--group", "family", "--text", "hi"])
            .unwrap();
        assert_eq!(
            (a.file.as_deref().and_then(|p| p.to_str()), a.groups.len(), a.text.as_deref()),
            (Some("beach.jpg"), 2, Some("hi"))
        );
        let a = parse(&["--media-id", "abc"]).unwrap();
        assert_eq!((a.media_id.as_deref(), a.groups.len()), (Some("abc"), 0));
        assert!(parse(&[]).is_err());
        assert!(parse(&["f.jpg", "--media-id", "abc"]).is_err());
        assert!(parse(&["--media-id", "abc", "--type", "image/png"]).is_err());
    }

    /// The outcome table lists each recipient; a duplicate says nothing
    /// was sent again.
    #[test]
    fn cli_group_send_human() {
        let o = GroupSendOutput {
            idempotency_key: "k".into(),
            upload: None,
            answer: GroupSendAnswer {
                message_id: 17,
                media_id: "9f86".into(),
                duplicate: true,
                revision: 88,
                recipients: vec![
                    RecipientOutcome {
                        uid: "bob".into(),
                        outcome: "delivered".into(),
                        reason: String::new(),
                    },
                    RecipientOutcome {
                        uid: "carol".into(),
                        outcome: "stored".into(),
                        reason: String::new(),
                    },
                ],
            },
        };
        let s = human(&o);
        assert!(s.starts_with("message 17 of media 9f86 at revision 88 (duplicate"), "{s}");
        assert!(
            s.ends_with("RECIPIENT  OUTCOME    REASON\nbob        delivered\ncarol      stored"),
            "{s}"
        );
        let j = serde_json::to_value(&o).unwrap();
        assert_eq!(
            (j["idempotency_key"].as_str(), j["message_id"].as_u64()),
            (Some("k"), Some(17))
        );
    }
}
