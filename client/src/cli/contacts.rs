//! `herald contacts add|remove|list`: a user's contacts and their groups
//! (friends = contacts who have the user as a contact too).

use clap::Subcommand;
use herald_client::media::ContactList;
use herald_client::ClientError;

use super::media::{blocking, UserArgs};
use super::output::yes_no;
use super::table::Table;
use super::Ctx;

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Add a contact, or replace its groups.
    Add {
        /// The contact's uid.
        contact: String,
        /// Group to put the contact in; repeat for several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[command(flatten)]
        user: UserArgs,
    },
    /// Remove a contact.
    Remove {
        /// The contact's uid.
        contact: String,
        #[command(flatten)]
        user: UserArgs,
    },
    /// List contacts (table: contact, groups, friend).
    List {
        /// Only the contacts in this group.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        user: UserArgs,
    },
}

pub async fn run(ctx: &Ctx, c: ContactsCommand) -> Result<(), ClientError> {
    match c {
        ContactsCommand::Add { contact, groups, user } => {
            let client = user.client(ctx)?;
            let (c2, g2) = (contact.clone(), groups.clone());
            let r = blocking(move || client.contacts_add(&c2, &g2)).await?;
            let v = serde_json::json!({ "uid": user.uid, "contact": contact, "groups": groups, "revision": r.revision });
            ctx.out.print(&v, |_| {
                let g = if groups.is_empty() {
                    "no group given".to_string()
                } else {
                    format!("groups {}", groups.join(", "))
                };
                format!("contact {contact} ({g}) at revision {}", r.revision)
            })
        }
        ContactsCommand::Remove { contact, user } => {
            let client = user.client(ctx)?;
            let c2 = contact.clone();
            let r = blocking(move || client.contacts_remove(&c2)).await?;
            let v = serde_json::json!({ "uid": user.uid, "contact": contact, "removed": r.removed, "revision": r.revision });
            ctx.out.print(&v, |_| {
                if r.removed {
                    format!("contact {contact} removed at revision {}", r.revision)
                } else {
                    format!("{contact} was not a contact (revision {})", r.revision)
                }
            })
        }
        ContactsCommand::List { group, user } => {
            let client = user.client(ctx)?;
            let l = blocking(move || client.contacts_list(group.as_deref())).await?;
            ctx.out.print(&l, human)
        }
    }
}

fn human(l: &ContactList) -> String {
    let mut t = Table::new(["CONTACT", "GROUPS", "FRIEND"]);
    for c in &l.contacts {
        t.row([c.uid.clone(), c.groups.join(","), yes_no(c.friend).to_string()]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use herald_client::media::Contact;

    fn parse(args: &[&str]) -> Result<ContactsCommand, clap::Error> {
        let mut v = vec!["herald", "contacts"];
        v.extend_from_slice(args);
        v.extend_from_slice(&["--uid", "alice", "--token", "t"]);
        match Cli::try_parse_from(v)?.command {
            Command::Contacts(c) => Ok(c),
            other => panic!("not contacts: {other:?}"),
        }
    }

    /// add takes repeated --group, list an optional --group, remove a uid.
    #[test]
    fn cli_parse_contacts() {
        let ContactsCommand::Add { contact, groups, .. } =
            parse(&["add", "bob", "--group", "friends", "--group", "family"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (contact.as_str(), groups),
            ("bob", vec!["friends".to_string(), "family".to_string()])
        );
        let ContactsCommand::List { group, .. } = parse(&["list", "--group", "friends"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(group.as_deref(), Some("friends"));
        assert!(matches!(parse(&["remove", "bob"]).unwrap(), ContactsCommand::Remove { .. }));
        assert!(parse(&["remove"]).is_err());
    }

    /// The list table shows contact, groups and friend yes/no.
    #[test]
    fn cli_contacts_table() {
        let l = ContactList {
            uid: "alice".into(),
            contacts: vec![
                Contact {
                    uid: "bob".into(),
                    groups: vec!["friends".into(), "family".into()],
                    friend: true,
                },
                Contact { uid: "carol".into(), groups: vec![], friend: false },
            ],
        };
        assert_eq!(human(&l), "CONTACT  GROUPS          FRIEND\nbob      friends,family  yes\ncarol                    no");
    }
}
