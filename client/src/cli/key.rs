//! `herald key new`: a fresh application API key and the `<api-key>`
//! element that lists it (format: [`herald_proto::apikey`]). Talks to no
//! node: the key is printed once and only its hash goes into the XML.

use clap::{Args, Subcommand};
use herald_client::ClientError;
use herald_proto::apikey::{self, Scope};
use serde::Serialize;

use super::Ctx;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make a new API key; prints the key (give it to the application) and the <api-key> line for every node's <access>.
    New(NewArgs),
}

/// `key new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The application's name (letters, digits, '.', '_', '-'; at most 64 bytes), unique within <access>.
    #[arg(long)]
    pub name: String,
    /// Space- or comma-separated scopes: presence:write presence:read messages:send groups settings gateway cluster:read admin metrics profile.
    #[arg(long)]
    pub scopes: String,
}

/// What `key new` prints with `--json`.
#[derive(Debug, Serialize)]
pub struct NewKey {
    pub name: String,
    pub key: String,
    pub hash: String,
    pub scopes: Vec<&'static str>,
    /// The element for `<access>`.
    pub xml: String,
}

/// Longest application name (the node's `MAX_API_KEY_NAME_BYTES`).
const MAX_NAME_BYTES: usize = 64;

pub fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<(), ClientError> {
    match cmd {
        KeyCommand::New(a) => {
            let k = new_key(&a.name, &a.scopes, rand::random())?;
            ctx.out.print(&k, |k| {
                format!(
                    "key (give it to {}; it is not shown again): {}\nadd to <access> in every node's XML:\n  {}",
                    k.name, k.key, k.xml
                )
            })
        }
    }
}

/// A key from `random`, named and scoped as asked.
fn new_key(name: &str, scopes: &str, random: [u8; 32]) -> Result<NewKey, ClientError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.chars().all(ok) {
        return Err(ClientError::InvalidArgument(format!(
            "--name {name:?}: 1 to {MAX_NAME_BYTES} letters, digits, '.', '_' or '-'"
        )));
    }
    let scopes: Vec<&'static str> = apikey::parse_scopes(scopes)
        .map_err(|e| ClientError::InvalidArgument(format!("--scopes: {e}")))?
        .into_iter()
        .map(Scope::name)
        .collect();
    let key = apikey::from_random(&random);
    let hash = apikey::hash(&key);
    let xml = format!("<api-key name=\"{name}\" hash=\"{hash}\" scopes=\"{}\"/>", scopes.join(" "));
    Ok(NewKey { name: name.into(), key, hash, scopes, xml })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new key has the key shape, its XML line holds its hash (never the
    /// key) and the sorted scopes; two random inputs give two keys.
    #[test]
    fn key_new_prints_key_and_xml() {
        let k = new_key("status-pool", "presence:read,presence:write", [1; 32]).unwrap();
        assert!(apikey::is_key(&k.key) && k.key.len() == 46, "{}", k.key);
        assert_eq!(k.hash, apikey::hash(&k.key));
        assert_eq!(
            k.xml,
            format!(
                "<api-key name=\"status-pool\" hash=\"{}\" scopes=\"presence:write presence:read\"/>",
                k.hash
            )
        );
        assert!(!k.xml.contains(&k.key));
        assert_ne!(new_key("a", "admin", [2; 32]).unwrap().key, k.key);
    }

    /// A bad name or scope list is refused before any key is made.
    #[test]
    fn key_new_refusals() {
        for (name, scopes) in [("", "admin"), ("a b", "admin"), ("a", "root"), ("a", "")] {
            let e = new_key(name, scopes, [0; 32]).unwrap_err();
            assert_eq!(e.code(), "invalid_argument", "{name:?} {scopes:?}: {e}");
        }
    }
}
