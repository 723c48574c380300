//! The XML configuration (`herald_node::config::parse`) on any text.

use super::{words, Seed, Target};

pub const TARGET: Target = Target {
    name: "config",
    about: "XML configuration: herald_node::config::parse on UTF-8-lossy text",
    run,
    seeds,
    dict,
    selftest: false,
};

fn run(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Err(e) = herald_node::config::parse(&text, "fuzz.xml") {
        // The message names file:line:column: computing it must not panic.
        let _ = (e.to_string(), e.line(), e.column(), e.field());
    }
}

/// The shipped configurations (the same files `conf/` holds).
fn seeds() -> Vec<Seed> {
    vec![
        Seed::new("herald.xml", include_str!("../../../conf/herald.xml")),
        Seed::new("reference.xml", include_str!("../../../conf/reference.xml")),
        Seed::new("cluster-3-node1.xml", include_str!("../../../conf/cluster-3/node1.xml")),
        Seed::new("cluster-3-node2.xml", include_str!("../../../conf/cluster-3/node2.xml")),
        Seed::new("cluster-3-node3.xml", include_str!("../../../conf/cluster-3/node3.xml")),
    ]
}

/// XML syntax and values a configuration holds (element and attribute
/// names come from the seeds). File names include `/dev/zero`: a key file
/// that never ends.
fn dict() -> Vec<Vec<u8>> {
    words(&[
        "<",
        ">",
        "</",
        "/>",
        "=\"",
        "\"",
        "'",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<?xml version=\"1.0\"?>",
        "<!DOCTYPE herald>",
        "&amp;",
        "&lt;",
        "&#x0;",
        "&#1114112;",
        "&#xD800;",
        "&unknown;",
        "\u{feff}",
        "\r\n",
        "\t",
        " ",
        "true",
        "false",
        "yes",
        "on",
        "",
        "localhost",
        "127.0.0.1",
        "::1",
        "[::1]",
        "0.0.0.0",
        "65535",
        "65536",
        "/dev/zero",
        "/dev/null",
        "/",
        ".",
        "..",
        "/proc/self/status",
        "hmac",
        "none",
        "external",
        "ms",
        "s",
        "KiB",
        "MiB",
        "GiB",
    ])
}
