//! A tiny HTTP/1.1 server over `std::net` for the unit tests of
//! [`crate::media`] (and the CLI): one thread per connection, one request
//! per connection (`Connection: close`), `Content-Length` bodies only.
//! Optionally TLS (rustls, ring) with a certificate the test makes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A request as the server read it.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub method: String,
    /// Path with the query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// How many body bytes arrived.
    pub body_len: u64,
    /// The first [`KEEP_BODY`] bytes of the body.
    pub body: Vec<u8>,
}

/// How much of a request body is kept in [`Req::body`].
pub const KEEP_BODY: usize = 1 << 20;

impl Req {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The value of query parameter `name`, undecoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// An answer; `cut_after` closes the connection after that many body bytes
/// (the headers still announce the whole length): an interrupted transfer.
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub cut_after: Option<usize>,
}

impl Resp {
    /// A JSON answer.
    pub fn json(status: u16, v: serde_json::Value) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(&v).unwrap(),
            cut_after: None,
        }
    }

    /// A Herald error answer `{"code","message"}`.
    pub fn error(status: u16, code: &str, message: &str) -> Resp {
        Resp::json(status, serde_json::json!({"code": code, "message": message}))
    }

    /// Adds a header.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Resp {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A running server: its base URL and every request it has read.
pub struct Server {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    /// Serves plain HTTP on 127.0.0.1 with `handler` until the test ends.
    pub fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
        Self::start_inner(handler, None)
    }

    /// Serves HTTPS for `localhost` with `cert_pem`/`key_pem`.
    pub fn start_tls(
        cert_pem: &str,
        key_pem: &str,
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
    ) -> Server {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::start_inner(handler, Some(Arc::new(cfg)))
    }

    fn start_inner(
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (handler, reqs, tls) = (handler.clone(), reqs.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(cfg) => {
                        let Ok(c) = rustls::ServerConnection::new(cfg) else { return };
                        serve(rustls::StreamOwned::new(c, conn), &*handler, &reqs);
                    }
                    None => serve(conn, &*handler, &reqs),
                });
            }
        });
        Server { base, requests }
    }

    /// The requests read so far.
    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve<S: Read + Write>(
    stream: S,
    handler: &(dyn Fn(&Req) -> Resp + Send + Sync),
    reqs: &Mutex<Vec<Req>>,
) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let mut req = Req {
        method: parts.next().unwrap_or("").to_string(),
        target: parts.next().unwrap_or("").to_string(),
        ..Req::default()
    };
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            req.headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: u64 = req.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut buf = [0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        match r.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let keep = n.min(KEEP_BODY.saturating_sub(req.body.len()));
                req.body.extend_from_slice(&buf[..keep]);
                req.body_len += n as u64;
                left -= n as u64;
            }
        }
    }
    reqs.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut s = r.into_inner();
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        resp.body.len()
    );
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let body = match resp.cut_after {
        Some(n) => &resp.body[..n.min(resp.body.len())],
        None => &resp.body[..],
    };
    let _ = s.write_all(body);
    let _ = s.flush();
    if resp.cut_after.is_some() {
        // Let the client read what was sent before the reset-free close.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Serves `data` the way `GET /v1/media/{id}/content` does: `Range:
/// bytes=a-`, `a-b` and `-n` answer 206 with `Content-Range`, past the end
/// 416; `honor_range: false` answers 200 with everything (a server that
/// ignores Range).
pub fn serve_range(req: &Req, data: &[u8], honor_range: bool) -> Resp {
    let size = data.len() as u64;
    let full = || {
        Resp { status: 200, body: data.to_vec(), ..Resp::default() }.with("Accept-Ranges", "bytes")
    };
    let Some(range) = req.header("range").filter(|_| honor_range) else { return full() };
    let Some(spec) = range.strip_prefix("bytes=") else { return full() };
    let Some((a, b)) = spec.split_once('-') else { return full() };
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => (a, b.min(size.saturating_sub(1))),
        (Ok(a), Err(_)) if b.is_empty() => (a, size.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() => (size.saturating_sub(n), size.saturating_sub(1)),
        _ => return full(),
    };
    if start >= size || start > end {
        return Resp::error(416, "range_not_satisfiable", "range past the end")
            .with("Content-Range", format!("bytes */{size}"));
    }
    Resp { status: 206, body: data[start as usize..=end as usize].to_vec(), ..Resp::default() }
        .with("Content-Range", format!("bytes {start}-{end}/{size}"))
        .with("Accept-Ranges", "bytes")
}
