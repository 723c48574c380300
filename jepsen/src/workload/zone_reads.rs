//! Zone reads (issue 16) in the presence workload: with `--zones`, a share
//! (`--zone-read-share`) of the presence workers' reads are not
//! linearizable but one of
//!
//! - `read-bounded`: `consistency: "bounded"`, the bound either sent
//!   (`max_staleness_ms`) or left to the node's `<reads max-staleness-ms>`
//!   (the same value: the harness writes it into every node's XML);
//! - `read-min-rev`: `consistency: "local"` with `min_revision` = the
//!   revision of the newest acknowledged write of that uid (by any worker,
//!   through any node) — read-your-writes across zones.
//!
//! Both are recorded with their parameters in the invoke's value
//! (`[uid, null, {...}]`) and the answer's `revision` and `staleness_ms` in
//! the completion's (`[uid, v, {...}]`), so `checker::zone_reads` needs
//! nothing but the history. The linearizability checker ignores them (it
//! reads `read`/`write` ops only). Reads have no side effects: every error
//! is `fail`, its code kept in `error` (`too_stale`,
//! `revision_not_reached`, ...).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::client::{reg_of, Api, ErrorKind};
use crate::history::{OpType, Process, Recorder};
use crate::rng::Rng;

pub const F_BOUNDED: &str = "read-bounded";
pub const F_MIN_REV: &str = "read-min-rev";

#[derive(Clone, Debug)]
pub struct ZoneReads {
    /// Share of the presence reads that are zone reads (0..=1).
    pub share: f64,
    /// The bound of bounded reads (= `<reads max-staleness-ms>`).
    pub bound_ms: u64,
    /// `<time tolerance-ms>` of the nodes: the checker's clock tolerance.
    pub tolerance_ms: u64,
    /// Newest acknowledged revision per uid.
    book: Arc<Mutex<HashMap<String, u64>>>,
}

impl ZoneReads {
    pub fn new(share: f64, bound_ms: u64, tolerance_ms: u64) -> ZoneReads {
        ZoneReads { share, bound_ms, tolerance_ms, book: Arc::default() }
    }

    /// Notes an acknowledged write's revision (the write answer's).
    pub fn note(&self, uid: &str, revision: &Value) {
        if let Some(r) = revision.as_u64() {
            let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
            let e = b.entry(uid.to_string()).or_insert(0);
            *e = (*e).max(r);
        }
    }

    fn newest(&self, uid: &str) -> Option<u64> {
        self.book.lock().unwrap_or_else(|e| e.into_inner()).get(uid).copied()
    }

    /// The request of one zone read: (f, recorded parameters, body).
    pub fn plan(&self, rng: &mut Rng, uid: &str) -> (&'static str, Value, Value) {
        match self.newest(uid).filter(|_| rng.chance(0.5)) {
            Some(r) => (
                F_MIN_REV,
                json!({"min_revision": r, "consistency": "local"}),
                json!({"uids": [uid], "consistency": "local", "min_revision": r}),
            ),
            None => {
                let explicit = rng.chance(0.5);
                let mut body = json!({"uids": [uid], "consistency": "bounded"});
                if explicit {
                    body["max_staleness_ms"] = json!(self.bound_ms);
                }
                (
                    F_BOUNDED,
                    json!({"bound_ms": self.bound_ms, "tolerance_ms": self.tolerance_ms, "explicit": explicit}),
                    body,
                )
            }
        }
    }

    /// One zone read of `uid` through the node at `ip`, recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        api: &Api,
        rec: &Recorder,
        p: Process,
        node: &str,
        ip: &str,
        uid: &str,
        rng: &mut Rng,
    ) {
        let (f, params, body) = self.plan(rng, uid);
        rec.record(OpType::Invoke, p, f, json!([uid, null, params]), Some(node), None);
        let (t, v, answer, err) = match api.post(ip, "/v1/presence/query", &body) {
            Ok(reply) => match reg_of(&reply, uid) {
                Ok(v) => (
                    OpType::Ok,
                    v,
                    json!({"revision": reply["revision"], "staleness_ms": reply["staleness_ms"]}),
                    None,
                ),
                Err(e) => (OpType::Fail, Value::Null, json!({}), Some(e)),
            },
            Err(e) => {
                let code = match &e.kind {
                    ErrorKind::Status(_, Some(c)) => c.clone(),
                    _ => "transport".into(),
                };
                (OpType::Fail, Value::Null, json!({"code": code}), Some(e.to_string()))
            }
        };
        let mut meta = params;
        if let (Value::Object(m), Value::Object(a)) = (&mut meta, answer) {
            m.extend(a);
        }
        rec.record(t, p, f, json!([uid, v, meta]), Some(node), err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the plan: a uid with no acknowledged write gets a bounded
    /// read (bound sent or left to the XML default), one with a write
    /// sometimes a local read at the newest revision noted.
    #[test]
    fn zone_reads_plan_bounded_and_min_revision() {
        let z = ZoneReads::new(1.0, 500, 5);
        let mut rng = Rng::new(9);
        for _ in 0..20 {
            let (f, params, body) = z.plan(&mut rng, "k1");
            assert_eq!(f, F_BOUNDED);
            assert_eq!(params["bound_ms"], json!(500));
            assert_eq!(body["consistency"], json!("bounded"));
            assert_eq!(body.get("max_staleness_ms").is_some(), params["explicit"] == json!(true));
        }
        z.note("k1", &json!(40));
        z.note("k1", &json!(12));
        let mut seen = 0;
        for _ in 0..40 {
            let (f, params, body) = z.plan(&mut rng, "k1");
            if f == F_MIN_REV {
                seen += 1;
                assert_eq!(params["min_revision"], json!(40));
                assert_eq!(body["min_revision"], json!(40));
                assert_eq!(body["consistency"], json!("local"));
            }
        }
        assert!(seen > 5 && seen < 35, "{seen}");
    }
}
