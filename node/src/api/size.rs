//! The answer-size limit, `<limits max-response-bytes>` (issue 14: a 24 KB
//! query once answered 132 MB). A presence query's answer counts its bytes
//! as it is encoded from the state and stops at the limit
//! ([`super::answer`]); a watch's snapshot is measured before it is built
//! ([`query_answer_bytes`], an upper bound, under the state lock); every
//! other JSON answer is checked once built, before it is sent
//! ([`limit_json_answers`]), so no read route sends more than the limit.

use axum::body::HttpBody as _;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use herald_domain::presence::{PresenceState, RecordRef};
use herald_proto::codes;

use super::{Api, ApiError};

/// Bytes a string may take beyond its own in either encoding: in JSON two
/// quotes and a separator (3), in protobuf a field tag and a length varint
/// (at most 1 + 5).
const STR_OVERHEAD: usize = 6;
/// Bytes one user's answer may take beyond its strings: the JSON field
/// names, up to three 20-digit numbers and the punctuation come to 160; the
/// protobuf tags and varints to less.
const RECORD_OVERHEAD: usize = 192;
/// Bytes of an ext entry beyond its key and value: in protobuf each map
/// entry is a nested message (tag and length).
const EXT_ENTRY_OVERHEAD: usize = 6;
/// Bytes of the answer around its lists (revision, staleness and field names).
pub(crate) const ANSWER_OVERHEAD: usize = 128;
/// Bytes of one unknown sid (a 20-digit number and a separator).
const SID_BYTES: usize = 21;

/// An upper bound of a string's bytes in a JSON answer (escapes counted as
/// serde_json writes them) or a protobuf one.
pub fn str_bytes(s: &str) -> usize {
    let escapes: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    s.len() + escapes + STR_OVERHEAD
}

/// An upper bound of one user's bytes in a query answer.
pub fn record_bytes(r: RecordRef<'_>) -> usize {
    RECORD_OVERHEAD
        + str_bytes(r.uid)
        + r.clients.iter().map(|c| str_bytes(c)).sum::<usize>()
        + r.ext.iter().map(|(k, v)| str_bytes(k) + str_bytes(v) + EXT_ENTRY_OVERHEAD).sum::<usize>()
}

/// An upper bound of the bytes of the answer to a query of `uids` and
/// `sids` (JSON on HTTP, protobuf on gRPC), computed without copying a
/// record. A user named twice is counted twice (the answer has it once):
/// the bound stays a bound.
pub fn query_answer_bytes(p: &PresenceState, uids: &[String], sids: &[u64]) -> usize {
    let by_uid = uids.iter().map(|u| p.get(u).map_or_else(|| str_bytes(u), record_bytes));
    let by_sid = sids.iter().map(|s| p.get_by_sid(*s).map_or(SID_BYTES, record_bytes));
    ANSWER_OVERHEAD + by_uid.sum::<usize>() + by_sid.sum::<usize>()
}

/// The refusal of an answer of `bytes` over `max`.
pub fn too_large(bytes: usize, max: usize) -> ApiError {
    ApiError::new(
        codes::RESPONSE_TOO_LARGE,
        format!(
            "the answer would be about {bytes} bytes, over the {max} byte limit \
             (<limits max-response-bytes>); ask for fewer ids"
        ),
    )
}

/// Middleware of the HTTP routes: the JSON answer of a read (`GET`) over
/// `max-response-bytes` is replaced by the `response_too_large` refusal.
/// Writes are left alone (their answers are bounded by their requests, and
/// refusing the answer of a committed write would hide that it committed);
/// the one read by `POST`, the presence query, counts its bytes as it is
/// encoded. Media bytes are streamed, not JSON, and bounded by their Range.
pub async fn limit_json_answers(
    State(api): State<std::sync::Arc<Api>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let read = req.method() == axum::http::Method::GET;
    let r = next.run(req).await;
    let max = api.limits.max_response_bytes;
    let json = r
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let size = r.body().size_hint();
    let bytes = size.exact().unwrap_or(size.lower()) as usize;
    if read && json && bytes > max {
        let e = too_large(bytes, max);
        api.count_error(&e);
        return e.into_response();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::presence::Record;
    use std::collections::BTreeSet;

    fn rec(uid: &str, sid: u64, clients: &[&str], ext: &[(&str, &str)]) -> Record {
        Record {
            uid: uid.into(),
            sid,
            clients: clients.iter().map(|c| c.to_string()).collect::<BTreeSet<_>>(),
            accepts_strangers: true,
            ext: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            changed_at_ms: u64::MAX,
            revision: u64::MAX,
            gateways: Default::default(),
        }
    }

    /// The estimate of a query answer is at least its real size as JSON
    /// (as the HTTP route writes it) and as protobuf (as gRPC sends it),
    /// for records full of characters JSON escapes, empty ones and the
    /// largest numbers, and for unknown uids and sids.
    #[test]
    fn estimate_bounds_both_encodings() {
        use prost::Message as _;
        let nasty = "\"\\\u{1}\n\u{1f}é€😀";
        let long = nasty.repeat(100);
        let ext: Vec<(String, String)> =
            (0..32).map(|i| (format!("{nasty}{i}"), long.clone())).collect();
        let ext: Vec<(&str, &str)> = ext.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let clients: Vec<String> = (0..16).map(|i| format!("{nasty}{i}")).collect();
        let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
        let records = vec![
            rec(&long, u64::MAX, &clients, &ext),
            rec("u", 0, &[], &[]),
            rec("\u{0}", 1, &["a"], &[("", "")]),
        ];
        let sid_index = records.iter().map(|r| (r.sid, r.uid.clone())).collect::<Vec<_>>();
        let state = PresenceState::from_parts(records.clone(), sid_index, 7);
        let check = |uids: &[String], sids: &[u64]| {
            let estimate = query_answer_bytes(&state, uids, sids);
            let q = state.query(uids, sids);
            // The largest read info an answer can carry.
            let info = crate::api::ReadInfo {
                revision: u64::MAX,
                staleness_ms: Some(u64::MAX),
                forwarded: true,
            };
            let json = serde_json::to_vec(&crate::api::http::query_json(&q, Some(info))).unwrap();
            let pb = crate::api::grpc::query_to_pb(q, Some(info)).encode_to_vec();
            assert!(estimate >= json.len(), "estimate {estimate} < JSON {}", json.len());
            assert!(estimate >= pb.len(), "estimate {estimate} < protobuf {}", pb.len());
            (estimate, json.len())
        };
        let mut uids: Vec<String> = records.iter().map(|r| r.uid.clone()).collect();
        uids.push(format!("unknown{nasty}"));
        // Every user once, an unknown uid and an unknown sid: the bound is
        // close (under 1.5 times the JSON).
        let (estimate, json) = check(&uids, &[12345678901234567890]);
        assert!(estimate * 2 < json * 3, "estimate {estimate} vs JSON {json}");
        // Users named twice (by uid and by sid) are counted twice.
        uids.push(long.clone());
        check(&uids, &[u64::MAX, 0, 1]);
    }
}
