//! Profile sync (issue 17): the leader's outbox dispatcher
//! ([`dispatch`]). The replicated part (bindings, profiles, the outbox) is
//! [`herald_domain::profile`]; the routes are [`crate::api::profile`].

pub mod dispatch;
