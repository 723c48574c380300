//! A headless Chromium (Debian's package, installed by
//! scripts/setup-test-deps) driven over the DevTools protocol
//! (`--remote-debugging-port`), for tests of pages in a real browser.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::free_port;

/// The chromium binary (Debian's package), if installed.
pub fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// A headless Chromium with one page open, driven over DevTools.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    pub fn open(url: &str) -> Result<Browser> {
        Self::open_with(url, &[])
    }

    /// As [`Browser::open`], with extra Chromium flags (e.g.
    /// `--ignore-certificate-errors` for a test's self-signed certificate).
    pub fn open_with(url: &str, flags: &[&str]) -> Result<Browser> {
        let Some(bin) = chromium() else { bail!("chromium missing: run scripts/setup-test-deps") };
        let profile = tempfile::tempdir()?;
        let port = free_port();
        let child = Command::new(bin)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .arg("--window-size=1280,900")
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--remote-debugging-port={port}"))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start chromium")?;
        let mut b = Browser { child, _profile: profile, ws: Self::attach(port)?, next_id: 0 };
        b.call("Runtime.enable", json!({}))?;
        Ok(b)
    }

    /// The page target's DevTools WebSocket (Chromium may take a while to
    /// start on a loaded machine).
    fn attach(
        port: u16,
    ) -> Result<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = (|| -> Result<String> {
                let list: Value = serde_json::from_str(
                    &ureq::get(format!("http://127.0.0.1:{port}/json/list"))
                        .call()?
                        .body_mut()
                        .read_to_string()?,
                )?;
                list.as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                    .context("no page target yet")
            })();
            match found {
                Ok(url) => {
                    let (ws, _) = tungstenite::connect(url)?;
                    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
                        s.set_read_timeout(Some(Duration::from_secs(30)))?;
                    }
                    return Ok(ws);
                }
                Err(e) if Instant::now() > deadline => return Err(e.context("chromium DevTools")),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(tungstenite::Message::Text(msg.to_string().into()))?;
        loop {
            if let tungstenite::Message::Text(t) = self.ws.read()? {
                let v: Value = serde_json::from_str(t.as_str())?;
                if v["id"] == id {
                    ensure!(v.get("error").is_none(), "{method}: {v}");
                    return Ok(v["result"].clone());
                }
            }
        }
    }

    /// The value of a JavaScript expression in the page (JSON-returnable),
    /// or None while it throws (e.g. before the page has loaded).
    pub fn eval(&mut self, expr: &str) -> Result<Option<Value>> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if r.get("exceptionDetails").is_some() {
            return Ok(None);
        }
        Ok(r["result"].get("value").cloned())
    }

    /// Waits until `expr` evaluates to a value `ok` accepts; that value.
    pub fn wait_until(
        &mut self,
        expr: &str,
        within: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expr)?;
            if let Some(v) = v.as_ref().filter(|v| ok(v)) {
                return Ok(v.clone());
            }
            ensure!(Instant::now() < deadline, "{expr} is {v:?} after {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG screenshot of the page, written to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) -> Result<()> {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("no screenshot data")?)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}
