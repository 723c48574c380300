//! Progress bars of transfers, on stderr; hidden when stderr is not a
//! terminal or with `--json`, so scripts and pipes see only the result.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::Output;

/// A byte progress bar labelled `label`; [`ProgressBar::hidden`] when it
/// should not be drawn.
pub fn bytes_bar(out: &Output, label: &str) -> ProgressBar {
    if out.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    // Built with the builder methods, which do not draw: the first frame
    // comes with the first progress report, when the total is known.
    let mut pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        .with_message(label.to_string());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        pb = pb.with_style(style.progress_chars("=> "));
    }
    pb
}

/// The `progress(done, total)` callback of the library's transfers,
/// driving `pb`.
pub fn callback(pb: &ProgressBar) -> impl FnMut(u64, u64) + Send + 'static {
    let pb = pb.clone();
    move |done, total| {
        if pb.length() != Some(total) {
            pb.set_length(total);
        }
        pb.set_position(done);
    }
}
