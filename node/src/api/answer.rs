//! A batch query's answer encoded straight from the state (issue 13): the
//! protobuf `QueryResponse` of gRPC and the JSON answer of HTTP are written
//! field by field from the records read in place
//! ([`QueryView`], [`RecordRef`]) while the read closure holds the state
//! lock, without copying a record into an owned `Record` or a
//! `pb::UserPresence` first. The bytes are what prost and serde_json write
//! for the owned types (checked by the tests below), except that a
//! protobuf `ext` map comes out in key order (prost writes a `HashMap` in
//! hash order; both decode to the same map).
//!
//! Both encoders count bytes as they go and stop with `response_too_large`
//! as soon as the answer passes `<limits max-response-bytes>`: an answer
//! over the limit is never built past the limit plus one record.
//!
//! Encoding under the lock: measured with perf on a follower serving the
//! bench's 1,000-id linearizable queries at 16 clients (release build,
//! 20,000 users, 2 shared cores; docs/benchmarks.md "Profiles of the missed
//! targets"), lookup plus encoding take ~0.5 ms per query, of which the
//! lookups (`query_view`, bound by cache misses on the records) are ~0.2
//! ms; before, the size estimate's lookups plus building the owned records
//! took ~0.8 ms under the same lock. Readers share the lock; only an apply
//! waits for it, and for less than before. An answer is at most
//! `max-response-bytes`, so the time under the lock is bounded by the limit
//! too.

use bytes::{BufMut, Bytes, BytesMut};
use herald_domain::presence::{ExtRef, QueryView, RecordRef};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use serde::Serialize;

use herald_proto::codes;

use super::ApiError;

// ------------------------------------------------------------- protobuf

/// Bytes of a length-delimited field (string or message) of `len` bytes.
fn ld_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_ld(tag: u32, bytes: &[u8], buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn u64_len(tag: u32, v: u64) -> usize {
    key_len(tag) + encoded_len_varint(v)
}

fn put_u64(tag: u32, v: u64, buf: &mut BytesMut) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(v, buf);
}

/// Bytes of one `UserPresence.ext` map entry (prost leaves out an empty
/// key or value, as proto3 leaves out defaults).
fn ext_entry_len(k: &str, v: &str) -> usize {
    let skip = |s: &str, tag| if s.is_empty() { 0 } else { ld_len(tag, s.len()) };
    skip(k, 1) + skip(v, 2)
}

/// Bytes of one `UserPresence` message (without its own tag and length),
/// fields as prost writes them: proto3 defaults left out.
fn user_len(r: &RecordRef<'_>, clients: &[&str], ext: ExtRef<'_>) -> usize {
    let mut n = 0;
    if !r.uid.is_empty() {
        n += ld_len(1, r.uid.len());
    }
    if r.sid != 0 {
        n += u64_len(2, r.sid);
    }
    if r.online() {
        n += key_len(3) + 1;
    }
    n += clients.iter().map(|c| ld_len(4, c.len())).sum::<usize>();
    if r.accepts_strangers {
        n += key_len(5) + 1;
    }
    n += ext.iter().map(|(k, v)| ld_len(6, ext_entry_len(k, v))).sum::<usize>();
    if r.changed_at_ms != 0 {
        n += u64_len(7, r.changed_at_ms);
    }
    if r.revision != 0 {
        n += u64_len(8, r.revision);
    }
    n
}

/// Writes `QueryResponse.users` entry `r` (tag, length, message).
fn put_user(r: &RecordRef<'_>, clients: &[&str], buf: &mut BytesMut) {
    let ext = r.ext;
    put_ld_header(2, user_len(r, clients, ext), buf);
    if !r.uid.is_empty() {
        put_ld(1, r.uid.as_bytes(), buf);
    }
    if r.sid != 0 {
        put_u64(2, r.sid, buf);
    }
    if r.online() {
        put_u64(3, 1, buf);
    }
    for c in clients {
        put_ld(4, c.as_bytes(), buf);
    }
    if r.accepts_strangers {
        put_u64(5, 1, buf);
    }
    for (k, v) in ext.iter() {
        put_ld_header(6, ext_entry_len(k, v), buf);
        if !k.is_empty() {
            put_ld(1, k.as_bytes(), buf);
        }
        if !v.is_empty() {
            put_ld(2, v.as_bytes(), buf);
        }
    }
    if r.changed_at_ms != 0 {
        put_u64(7, r.changed_at_ms, buf);
    }
    if r.revision != 0 {
        put_u64(8, r.revision, buf);
    }
}

fn put_ld_header(tag: u32, len: usize, buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// The refusal of an answer found over `max` once `at_least` bytes of it
/// were written.
fn over(at_least: usize, max: usize) -> ApiError {
    ApiError::new(
        codes::RESPONSE_TOO_LARGE,
        format!(
            "the answer is over {at_least} bytes, past the {max} byte limit \
             (<limits max-response-bytes>); ask for fewer ids"
        ),
    )
}

/// Bytes reserved up front per record found, so that most answers never
/// regrow their buffer; an over-estimate costs only untouched capacity
/// (the buffer is written as far as the answer goes). The bench's records
/// (a uid, a sid, times; no client, empty ext after its writes) measured
/// 134 B each in the JSON answer; records with client types and ext
/// entries take more.
const PB_RECORD_GUESS: usize = 128;
const JSON_RECORD_GUESS: usize = 224;

/// The `herald.v1.QueryResponse` of `q`, as prost would encode it, or
/// `response_too_large` once it passes `max` bytes.
pub fn query_pb(
    q: &QueryView<'_>,
    staleness_ms: Option<u64>,
    max: usize,
) -> Result<Bytes, ApiError> {
    let users = q.users();
    let mut buf =
        BytesMut::with_capacity((users.len() * PB_RECORD_GUESS + 64).min(max.saturating_add(64)));
    if q.revision() != 0 {
        put_u64(1, q.revision(), &mut buf);
    }
    let mut clients: Vec<&str> = Vec::new();
    for r in users {
        clients.clear();
        clients.extend(r.clients.iter().map(String::as_str));
        put_user(&r, &clients, &mut buf);
        if buf.len() > max {
            return Err(over(buf.len(), max));
        }
    }
    for u in q.unknown() {
        put_ld(3, u.as_bytes(), &mut buf);
    }
    let sids = q.unknown_sids();
    if !sids.is_empty() {
        let len: usize = sids.iter().map(|s| encoded_len_varint(*s)).sum();
        put_ld_header(4, len, &mut buf);
        for s in sids {
            encode_varint(*s, &mut buf);
        }
    }
    if let Some(ms) = staleness_ms {
        put_u64(5, ms, &mut buf);
    }
    if buf.len() > max {
        return Err(over(buf.len(), max));
    }
    Ok(buf.freeze())
}

// ----------------------------------------------------------------- JSON

/// One user of a JSON answer, borrowed from the state: the fields of
/// `wire::presence::UserPresence` in its (alphabetical) order.
#[derive(Serialize)]
struct UserView<'a, 'c> {
    accepts_strangers: bool,
    changed_at_ms: u64,
    clients: &'c [&'a str],
    ext: ExtRef<'a>,
    online: bool,
    revision: u64,
    sid: u64,
    uid: &'a str,
}

fn put_json(buf: &mut Vec<u8>, v: &impl Serialize) {
    serde_json::to_writer(buf, v).expect("strings, numbers and string maps always serialize");
}

/// The JSON answer of `q` (`wire::presence::QueryAnswer`'s bytes as
/// serde_json writes them), or `response_too_large` once it passes `max`
/// bytes.
pub fn query_json(
    q: &QueryView<'_>,
    staleness_ms: Option<u64>,
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    let users = q.users();
    let mut buf =
        Vec::with_capacity((users.len() * JSON_RECORD_GUESS + 128).min(max.saturating_add(128)));
    buf.extend_from_slice(b"{\"revision\":");
    put_json(&mut buf, &q.revision());
    if let Some(ms) = staleness_ms {
        buf.extend_from_slice(b",\"staleness_ms\":");
        put_json(&mut buf, &ms);
    }
    buf.extend_from_slice(b",\"unknown\":[");
    for (i, u) in q.unknown().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        put_json(&mut buf, &u);
    }
    buf.extend_from_slice(b"],\"unknown_sids\":");
    put_json(&mut buf, &q.unknown_sids());
    buf.extend_from_slice(b",\"users\":[");
    let mut clients: Vec<&str> = Vec::new();
    for (i, r) in users.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        clients.clear();
        clients.extend(r.clients.iter().map(String::as_str));
        let u = UserView {
            accepts_strangers: r.accepts_strangers,
            changed_at_ms: r.changed_at_ms,
            clients: &clients,
            ext: r.ext,
            online: r.online(),
            revision: r.revision,
            sid: r.sid,
            uid: r.uid,
        };
        put_json(&mut buf, &u);
        if buf.len() > max {
            return Err(over(buf.len(), max));
        }
    }
    buf.extend_from_slice(b"]}");
    if buf.len() > max {
        return Err(over(buf.len(), max));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::presence::{PresenceState, Record};
    use prost::Message as _;
    use std::collections::BTreeSet;

    fn rec(uid: &str, sid: u64, clients: &[&str], ext: &[(&str, &str)]) -> Record {
        Record {
            uid: uid.into(),
            sid,
            clients: clients.iter().map(|c| c.to_string()).collect::<BTreeSet<_>>(),
            accepts_strangers: sid.is_multiple_of(2),
            ext: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            changed_at_ms: if sid == 0 { 0 } else { 1_700_000_000_000u64.saturating_add(sid) },
            revision: sid.saturating_mul(3),
            gateways: Default::default(),
        }
    }

    /// Records with every field set and unset: empty uid parts, no client,
    /// many clients, characters JSON escapes, an ext entry with an empty
    /// key or value, the largest numbers.
    fn state() -> PresenceState {
        let nasty = "\"\\\u{1}\n\u{1f}é€😀";
        let records = vec![
            rec("u1", 1001, &["web", "mobile", "desk"], &[("k", "v")]),
            rec("u2", 0, &[], &[]),
            rec(nasty, u64::MAX, &[nasty, "a"], &[(nasty, nasty)]),
            rec("u3", 4, &["web"], &[("", "")]),
            rec("u4", 6, &["web"], &[("", "x")]),
            rec("u5", 8, &["web"], &[("y", "")]),
            rec("many", 10, &["web"], &[("a", "1"), ("b", "2"), ("c", "3")]),
        ];
        let sid_index = records.iter().map(|r| (r.sid, r.uid.clone())).collect::<Vec<_>>();
        PresenceState::from_parts(records, sid_index, 7)
    }

    fn queries() -> Vec<(Vec<String>, Vec<u64>)> {
        let s = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        vec![
            (vec![], vec![]),
            (s(&["u1", "nobody", "u2", "", "u1"]), vec![1001, 12345678901234567890, 4, 0]),
            (s(&["\"\\\u{1}\n\u{1f}é€😀", "u3", "u4", "u5"]), vec![u64::MAX, 1]),
            (s(&["many"]), vec![]),
        ]
    }

    /// Runs `check` on every query of [`queries`] against [`state`], with
    /// no staleness, 0 and the largest: the view, the staleness, and the
    /// read's info as the node gives it.
    fn each_case(mut check: impl FnMut(&QueryView<'_>, Option<u64>, crate::api::ReadInfo)) {
        let st = state();
        for (uids, sids) in queries() {
            let q = st.query_view(&uids, &sids);
            for staleness in [None, Some(0), Some(u64::MAX)] {
                let info =
                    crate::api::ReadInfo { revision: 7, staleness_ms: staleness, forwarded: false };
                check(&q, staleness, info);
            }
        }
    }

    /// The JSON answer written from the state is byte for byte the one the
    /// node wrote from owned records (`http::query_json`, the wire type's
    /// bytes), with and without staleness.
    #[test]
    fn json_answer_keeps_its_bytes() {
        each_case(|q, staleness, info| {
            let old = serde_json::to_vec(&crate::api::http::query_json(&q.to_result(), Some(info)))
                .unwrap();
            let new = query_json(q, staleness, usize::MAX).unwrap();
            assert_eq!(String::from_utf8(new).unwrap(), String::from_utf8(old).unwrap());
        });
    }

    /// The protobuf answer written from the state is byte for byte what
    /// prost writes for the owned `QueryResponse` when every ext has at
    /// most one entry (prost writes a larger `HashMap` in hash order), and
    /// decodes to the same message in every case.
    #[test]
    fn protobuf_answer_keeps_its_bytes() {
        each_case(|q, staleness, info| {
            let owned = crate::api::grpc::query_to_pb(q.to_result(), Some(info));
            let new = query_pb(q, staleness, usize::MAX).unwrap();
            assert_eq!(herald_proto::v1::QueryResponse::decode(new.clone()).unwrap(), owned);
            if owned.users.iter().all(|u| u.ext.len() <= 1) {
                assert_eq!(new.to_vec(), owned.encode_to_vec());
            }
            assert_eq!(new.len(), owned.encoded_len());
        });
    }

    /// An answer over the limit is refused with `response_too_large` in
    /// both encodings; one of exactly the limit is answered.
    #[test]
    fn answers_over_the_limit_are_refused() {
        let st = state();
        let (uids, sids) = queries().swap_remove(1);
        let q = st.query_view(&uids, &sids);
        let pb = query_pb(&q, Some(0), usize::MAX).unwrap().len();
        let json = query_json(&q, Some(0), usize::MAX).unwrap().len();
        assert_eq!(query_pb(&q, Some(0), pb).unwrap().len(), pb);
        assert_eq!(query_json(&q, Some(0), json).unwrap().len(), json);
        for max in [0, 10, pb - 1] {
            let e = query_pb(&q, Some(0), max).expect_err("over the limit");
            assert_eq!(e.code(), "response_too_large");
        }
        for max in [0, 10, json - 1] {
            let e = query_json(&q, Some(0), max).expect_err("over the limit");
            assert_eq!(e.code(), "response_too_large");
        }
    }
}
