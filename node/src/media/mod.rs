//! Media: content-addressed files, edit rules, replication (MISSION G, S).
pub mod edit;
pub mod range;
