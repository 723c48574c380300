//! The web console (issue 18): three static files compiled into the
//! binary and served at `/console`. They hold no data and no secret; the
//! page asks the operator for an API key and fetches everything from the
//! authenticated JSON routes (`/v1/cluster`, `/v1/presence/query`,
//! `/v1/presence/watch`, `/v1/cluster/transfer-leader`), so a missing or
//! wrong credential gets the login form, never data.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::routes::{Served, Verb};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Only the console's own script and style, and fetches to this node: no
/// inline script or style can run, nothing is framed or sent elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The console's routes, merged into the HTTP router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Served<S> {
    Served::default()
        .at(Verb::Get, "/console", index)
        .at(Verb::Get, "/console/console.js", script)
        .at(Verb::Get, "/console/console.css", style)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page has no inline script or style (the CSP would block it) and
    /// no credential: every key the console uses is typed by the operator.
    #[test]
    fn console_page_has_no_inline_script_and_no_secret() {
        let lower = INDEX.to_lowercase();
        for tag in lower.match_indices("<script") {
            let rest = &lower[tag.0..];
            let end = rest.find('>').unwrap();
            assert!(rest[..end].contains(" src="), "inline script: {}", &rest[..end]);
        }
        assert!(!lower.contains("<style") && !lower.contains(" style="), "inline style");
        assert!(!lower.contains("onclick=") && !lower.contains("onsubmit="), "inline handler");
        for text in [INDEX, SCRIPT] {
            assert!(
                !text.contains("hk_herald") && !text.contains("hk_test"),
                "a key in the console"
            );
        }
    }
}
