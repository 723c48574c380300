//! Media, contacts, group-send and the shared page (MISSION G1–G3,
//! S1–S4): what the HTTP routes ([`http`]) share — media metadata, library
//! writes (who may call each route is decided before, by
//! [`super::access::guard`]). The contract is docs/media.md; the byte
//! handling is in [`crate::media`], the replicated metadata in
//! [`herald_domain::library`].

pub mod http;

use herald_proto::codes;

use super::{Api, ApiError, Consistency};
use crate::media::store::valid_id;
use herald_domain::library::{LibOp, LibResult, MediaMeta};
use herald_domain::state::{Op, OpResult};

/// Longest `text` of a group-send (it travels in every recipient's message).
pub const MAX_TEXT_BYTES: usize = 4096;
/// Content type of the message a group-send delivers.
pub use herald_proto::wire::media::MEDIA_MESSAGE_TYPE;

/// The credential of an `Authorization: Bearer` header.
pub(crate) use super::access::bearer;

impl Api {
    /// Media metadata from this node's state, after a read barrier when it
    /// is not known here yet (committed through another node just now).
    pub(crate) async fn media_meta(&self, id: &str) -> Result<MediaMeta, ApiError> {
        check_media_id(id)?;
        if let Ok(m) = self.node.read_local(|st| media_in(st, id)) {
            return Ok(m);
        }
        self.node.read(Consistency::Linearizable, |st| media_in(st, id)).await?
    }
}

/// A media id as the routes take it: 64 lowercase hex digits (a SHA-256),
/// or 400 `invalid_media_id` before anything is read or written.
pub(crate) fn check_media_id(id: &str) -> Result<(), ApiError> {
    if !valid_id(id) {
        return Err(ApiError::new(
            codes::INVALID_MEDIA_ID,
            format!("a media id is 64 lowercase hex digits, not {:?}", trim_for_message(id)),
        ));
    }
    Ok(())
}

/// At most the first 80 bytes of `s` (on a char boundary): a refusal does
/// not echo a huge input back.
pub(crate) fn trim_for_message(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A media's metadata as `st` holds it, or 404 `unknown_media`.
pub(crate) fn media_in(st: &herald_domain::state::State, id: &str) -> Result<MediaMeta, ApiError> {
    st.lib
        .media(id)
        .cloned()
        .ok_or_else(|| ApiError::new(codes::UNKNOWN_MEDIA, format!("no media {id}")))
}

/// Writes one library op; a refusal becomes its catalog code.
pub(crate) async fn write_lib(api: &Api, op: LibOp) -> Result<(u64, LibResult), ApiError> {
    let (rev, results) = api.node.write(vec![Op::Lib(op)]).await?;
    match results.into_iter().next() {
        Some(OpResult::Lib(LibResult::Refused(code))) => {
            let code = codes::named(&code).unwrap_or(codes::REFUSED);
            Err(ApiError::new(code, format!("refused: {code}")))
        }
        Some(OpResult::Lib(r)) => Ok((rev, r)),
        other => Err(ApiError::new(codes::INTERNAL, format!("unexpected apply result {other:?}"))),
    }
}
