//! `herald media ...`: upload, download (resumable), info, delete and the
//! shared list, over the HTTP API of `--node` ([`herald_client::media`]).
//!
//! The library's HTTP client is blocking; commands run it on tokio's
//! blocking pool ([`blocking`]) so the current-thread runtime stays free
//! (for Ctrl-C handling in `watch-folder`). The user flags ([`UserArgs`])
//! are shared with `group-send`, `contacts` and `watch-folder`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use herald_client::media::{
    extension_for, DownloadReport, MediaClient, MediaInfo, SharedPage, UploadAnswer,
};
use herald_client::ClientError;

use super::output::format_ms;
use super::progress;
use super::table::Table;
use super::Ctx;

/// Who is acting: the uid and its session token.
#[derive(Args, Debug, Clone)]
pub struct UserArgs {
    /// The user acting (the session token's uid).
    #[arg(long, env = "HERALD_UID")]
    pub uid: String,
    /// That user's session token (`herald token issue`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding that token (instead of --token).
    #[arg(long, env = "HERALD_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

impl UserArgs {
    /// The session token from --token / HERALD_TOKEN or --token-file /
    /// HERALD_TOKEN_FILE.
    pub fn token(&self) -> Result<String, ClientError> {
        herald_client::Credential::token_from_sources(
            self.token.as_deref(),
            self.token_file.as_deref(),
        )
    }

    /// A media client of `--node` (with `--ca`) acting as this user.
    pub fn client(&self, ctx: &Ctx) -> Result<MediaClient, ClientError> {
        MediaClient::new(&ctx.node, &self.uid, &self.token()?, &ctx.opts)
    }
}

/// Runs blocking library calls on tokio's blocking pool; a panic there is
/// re-raised here.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => Err(ClientError::Transport(format!("the transfer was cancelled: {e}"))),
        },
    }
}

#[derive(Subcommand, Debug)]
pub enum MediaCommand {
    /// Upload a file (streamed, with a progress bar); prints its media id, size, replicas and link.
    Upload(UploadArgs),
    /// Download a media (resumable: run again after an interruption to continue); checks its SHA-256.
    Download(DownloadArgs),
    /// Show a media: size, type, owners, replicas and a short-lived download URL.
    Info(IdArgs),
    /// Stop sharing a media (it is deleted once nobody owns it).
    Delete(IdArgs),
    /// List the media a user shares (default: your own); you must be that user or a friend.
    Shared(SharedArgs),
}

/// `media upload`.
#[derive(Args, Debug)]
pub struct UploadArgs {
    /// The file to upload.
    pub file: PathBuf,
    /// Content type (default: guessed from the extension).
    #[arg(long = "type", value_name = "MIME")]
    pub content_type: Option<String>,
    /// Name shown to recipients (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub user: UserArgs,
}

/// `media download`.
#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// The media id.
    pub id: String,
    /// Where to write it (default: ID.EXT in the current directory, EXT from its content type).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub user: UserArgs,
}

/// `media info` and `media delete`.
#[derive(Args, Debug)]
pub struct IdArgs {
    /// The media id.
    pub id: String,
    #[command(flatten)]
    pub user: UserArgs,
}

/// `media shared`.
#[derive(Args, Debug)]
pub struct SharedArgs {
    /// Whose shared media (default: --uid).
    pub of: Option<String>,
    #[command(flatten)]
    pub user: UserArgs,
}

pub async fn run(ctx: &Ctx, c: MediaCommand) -> Result<(), ClientError> {
    match c {
        MediaCommand::Upload(a) => {
            let client = a.user.client(ctx)?;
            let answer = upload(ctx, client, a.file, a.content_type, a.name).await?;
            ctx.out.print(&answer, upload_human)
        }
        MediaCommand::Download(a) => {
            let client = a.user.client(ctx)?;
            let bar = progress::bytes_bar(&ctx.out, "download");
            let (id, output, force) = (a.id, a.output, a.force);
            let cb = progress::callback(&bar);
            let report = blocking(move || {
                let dest = match output {
                    Some(p) => p,
                    None => PathBuf::from(default_name(&id, &client.info(&id, None)?.content_type)),
                };
                if !force && dest.exists() {
                    return Err(ClientError::InvalidArgument(format!(
                        "{} exists (--force replaces it)",
                        dest.display()
                    )));
                }
                client.download(&id, &dest, cb)
            })
            .await;
            bar.finish_and_clear();
            ctx.out.print(&report?, download_human)
        }
        MediaCommand::Info(a) => {
            let client = a.user.client(ctx)?;
            let info = blocking(move || client.info(&a.id, None)).await?;
            ctx.out.print(&info, info_human)
        }
        MediaCommand::Delete(a) => {
            let client = a.user.client(ctx)?;
            let (id, uid) = (a.id.clone(), a.user.uid.clone());
            let answer = blocking(move || client.delete_media(&a.id)).await?;
            let v = serde_json::json!({ "media_id": id, "uid": uid, "deleted": true, "answer": answer });
            ctx.out.print(&v, |_| format!("media {id} is no longer shared by {uid}"))
        }
        MediaCommand::Shared(a) => {
            let client = a.user.client(ctx)?;
            let of = a.of.unwrap_or_else(|| a.user.uid.clone());
            let page = blocking(move || client.shared(&of)).await?;
            ctx.out.print(&page, shared_human)
        }
    }
}

/// Uploads with a progress bar (shared with `group-send`).
pub async fn upload(
    ctx: &Ctx,
    client: MediaClient,
    file: PathBuf,
    content_type: Option<String>,
    name: Option<String>,
) -> Result<UploadAnswer, ClientError> {
    let label = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".into());
    let bar = progress::bytes_bar(&ctx.out, &label);
    let cb = progress::callback(&bar);
    let r =
        blocking(move || client.upload(&file, content_type.as_deref(), name.as_deref(), cb)).await;
    bar.finish_and_clear();
    r
}

/// `<id>.<ext>` for a known content type, else `<id>`.
pub fn default_name(id: &str, content_type: &str) -> String {
    match extension_for(content_type) {
        Some(ext) => format!("{id}.{ext}"),
        None => id.to_string(),
    }
}

fn upload_human(a: &UploadAnswer) -> String {
    let mut notes = Vec::new();
    if a.duplicate {
        notes.push("already stored: you were added as an owner");
    }
    if a.edited {
        notes.push("edited by the node: the id is the hash of the stored bytes");
    }
    let mut s = format!(
        "media     {}\nsize      {}\ntype      {}\nreplicas  {}\nlink      {}",
        a.media_id,
        a.size,
        a.content_type,
        join_nums(&a.replicas),
        a.link
    );
    for n in notes {
        s.push_str(&format!("\nnote      {n}"));
    }
    s
}

fn download_human(r: &DownloadReport) -> String {
    let resumed = if r.resumed_from > 0 {
        format!(", resumed at byte {}", r.resumed_from)
    } else {
        String::new()
    };
    format!(
        "saved {} ({} bytes, {}{resumed}); sha256 verified",
        r.path.display(),
        r.size,
        r.content_type
    )
}

fn info_human(i: &MediaInfo) -> String {
    format!(
        "media     {}\nsize      {}\ntype      {}\ncreated   {}\nowners    {}\nreplicas  {}\nurl       {}\nexpires   {}",
        i.media_id,
        i.size,
        i.content_type,
        format_ms(i.created_ms),
        i.owners.join(", "),
        join_nums(&i.replicas),
        i.url,
        format_ms(i.expires_at_ms)
    )
}

fn shared_human(p: &SharedPage) -> String {
    let mut t = Table::new(["MEDIA", "NAME", "SIZE", "TYPE", "CREATED"]);
    for m in &p.media {
        t.row([
            m.media_id.clone(),
            m.name.clone(),
            m.size.to_string(),
            m.content_type.clone(),
            format_ms(m.created_ms),
        ]);
    }
    format!("{} shares {} media\n{t}", p.uid, p.media.len())
}

fn join_nums(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<MediaCommand, clap::Error> {
        let mut v = vec!["herald", "media"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::Media(c) => Ok(c),
            other => panic!("not media: {other:?}"),
        }
    }

    /// The media subcommands parse with their flags; --uid and --token are
    /// required (unless in the environment).
    #[test]
    fn cli_parse_media() {
        let u = ["--uid", "alice", "--token", "t"];
        let MediaCommand::Upload(a) =
            parse(&[&["upload", "a.jpg", "--type", "image/png", "--name", "x"][..], &u].concat())
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (a.file.to_str(), a.content_type.as_deref(), a.name.as_deref(), a.user.uid.as_str()),
            (Some("a.jpg"), Some("image/png"), Some("x"), "alice")
        );
        let MediaCommand::Download(a) =
            parse(&[&["download", "abc", "-o", "out.jpg"][..], &u].concat()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (a.id.as_str(), a.output.as_deref(), a.force),
            ("abc", Some(Path::new("out.jpg")), false)
        );
        let MediaCommand::Shared(a) = parse(&[&["shared"][..], &u].concat()).unwrap() else {
            panic!()
        };
        assert_eq!(a.of, None);
        let MediaCommand::Shared(a) = parse(&[&["shared", "bob"][..], &u].concat()).unwrap() else {
            panic!()
        };
        assert_eq!(a.of.as_deref(), Some("bob"));
        assert!(matches!(
            parse(&[&["info", "abc"][..], &u].concat()).unwrap(),
            MediaCommand::Info(_)
        ));
        assert!(matches!(
            parse(&[&["delete", "abc"][..], &u].concat()).unwrap(),
            MediaCommand::Delete(_)
        ));
        if std::env::var_os("HERALD_UID").is_none() {
            assert!(parse(&["info", "abc", "--token", "t"]).is_err());
        }
    }

    /// The default download name is the id plus the extension of its type.
    #[test]
    fn cli_media_default_name() {
        assert_eq!(default_name("ab12", "image/jpeg"), "ab12.jpg");
        assert_eq!(default_name("ab12", "video/quicktime"), "ab12.mov");
        assert_eq!(default_name("ab12", "application/x-unknown"), "ab12");
    }

    /// The human upload answer names the id, replicas and link, and says
    /// when the content was already stored.
    #[test]
    fn cli_media_upload_human() {
        let a = UploadAnswer {
            media_id: "9f86".into(),
            size: 5,
            content_type: "image/jpeg".into(),
            sha256: "9f86".into(),
            replicas: vec![1, 3],
            edited: false,
            duplicate: true,
            link: "http://n1/v1/media/9f86".into(),
        };
        let s = upload_human(&a);
        assert!(s.starts_with("media     9f86\nsize      5\n"), "{s}");
        assert!(
            s.contains("replicas  1, 3")
                && s.contains("link      http://n1/v1/media/9f86")
                && s.contains("already stored"),
            "{s}"
        );
    }
}
