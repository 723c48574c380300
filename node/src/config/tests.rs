use super::schema::{ElemSpec, Kind, Need, AUTH, AUTH_MODES, SCHEMA, UNBOUNDED};
use super::xml::{Ctx, Elem};
use super::*;

const NODE1: &str = include_str!("../../../conf/cluster-3/node1.xml");
const NODE2: &str = include_str!("../../../conf/cluster-3/node2.xml");
const NODE3: &str = include_str!("../../../conf/cluster-3/node3.xml");
const REFERENCE: &str = include_str!("../../../conf/reference.xml");
const ZONES: [&str; 5] = [
    include_str!("../../../conf/zones-3dc/node1.xml"),
    include_str!("../../../conf/zones-3dc/node2.xml"),
    include_str!("../../../conf/zones-3dc/node3.xml"),
    include_str!("../../../conf/zones-3dc/node4.xml"),
    include_str!("../../../conf/zones-3dc/node5.xml"),
];

/// Every shipped file, by its path under conf/, with its text.
const SHIPPED: &[(&str, &str)] = &[
    ("herald.xml", EMBEDDED_DEFAULT),
    ("cluster-3/node1.xml", NODE1),
    ("cluster-3/node2.xml", NODE2),
    ("cluster-3/node3.xml", NODE3),
    ("reference.xml", REFERENCE),
    ("zones-3dc/node1.xml", ZONES[0]),
    ("zones-3dc/node2.xml", ZONES[1]),
    ("zones-3dc/node3.xml", ZONES[2]),
    ("zones-3dc/node4.xml", ZONES[3]),
    ("zones-3dc/node5.xml", ZONES[4]),
];

/// A valid two-server file; the line numbers below refer to it.
const BASE: &str = r#"<herald cluster="c">
  <node number="1" data-dir="./d"/>
  <servers>
    <server number="1" host="127.0.0.1" sync-port="7101" time-port="7102" publish-port="7103"/>
    <server number="2" host="127.0.0.1" sync-port="7201" time-port="7202" publish-port="7203"/>
  </servers>
</herald>
"#;

/// BASE with the first `from` replaced by `to` (which must exist).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

/// BASE with `line` added as line 7, just before `</herald>`.
fn with(line: &str) -> String {
    edit("</herald>", &format!("  {line}\n</herald>"))
}

/// Asserts `text` is refused at `line`, blaming `field`, with a message that
/// starts with the file name and line and contains the field and `needle`.
fn refused(text: &str, line: usize, field: Option<&str>, needle: &str) -> ConfigError {
    let err = parse(text, "t.xml").expect_err("must be refused");
    let msg = err.to_string();
    assert_eq!(err.line(), Some(line), "wrong line: {msg}");
    assert_eq!(err.field(), field, "wrong field: {msg}");
    assert!(msg.starts_with(&format!("t.xml:{line}:")), "no file:line: {msg}");
    if let Some(f) = field {
        assert!(msg.contains(f), "field not named: {msg}");
    }
    assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    err
}

fn base() -> Config {
    parse(BASE, "t.xml").expect("BASE is valid")
}

// --- shipped files -----------------------------------------------------

/// The embedded default is conf/herald.xml: one node on 127.0.0.1 with
/// ports 7101/7102/7103, data dir ./data/node1, cluster herald-local.
#[test]
fn config_shipped_embedded_default() {
    let c = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME).unwrap();
    assert_eq!(c.source, EMBEDDED_NAME);
    assert_eq!(c.cluster, "herald-local");
    assert_eq!(c.node, 1);
    assert!(!c.join);
    assert_eq!(c.data_dir, PathBuf::from("./data/node1"));
    assert_eq!(
        c.servers,
        vec![Server {
            number: 1,
            host: "127.0.0.1".into(),
            sync_port: 7101,
            time_port: 7102,
            publish_port: 7103,
            zone: DEFAULT_ZONE.into(),
            role: ServerRole::Voter,
            sync_via: None,
        }]
    );
    assert_eq!(c.this_server().sync_addr(), "127.0.0.1:7101");
    assert_eq!(c.this_server().time_addr(), "127.0.0.1:7102");
    assert_eq!(c.this_server().publish_addr(), "127.0.0.1:7103");
    assert_eq!(c.raft, RaftTiming::default());
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.gateway, GatewayConfig::default());
    assert_eq!(c.messages, MessagesConfig::default());
    assert_eq!(c.auth, dev_key());
    assert_eq!(c.tls, None);
}

/// The development HMAC key of the shipped files.
fn dev_key() -> AuthConfig {
    AuthConfig::Hmac {
        key: b"herald-dev-key-change-me-0001".to_vec(),
        max_token_lifetime_s: DEFAULT_MAX_TOKEN_LIFETIME_S,
    }
}

/// Each cluster-3 file is node N of the same three servers (7N01/7N02/7N03)
/// with data dir ./data/cluster-3/nodeN.
#[test]
fn config_shipped_cluster3_nodes() {
    let files = [NODE1, NODE2, NODE3];
    let configs: Vec<Config> = files
        .iter()
        .enumerate()
        .map(|(i, t)| parse(t, &format!("node{}.xml", i + 1)).unwrap())
        .collect();
    for (i, c) in configs.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(c.node, n);
        assert_eq!(c.cluster, "herald-local");
        assert!(!c.join);
        assert_eq!(c.data_dir, PathBuf::from(format!("./data/cluster-3/node{n}")));
        assert_eq!(c.servers, configs[0].servers, "same server list everywhere");
        assert_eq!(c.auth, dev_key(), "same development key everywhere");
        assert_eq!(c.this_server().number, n);
    }
    for s in &configs[0].servers {
        let base = 7000 + 100 * s.number as u16;
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!((s.sync_port, s.time_port, s.publish_port), (base + 1, base + 2, base + 3));
    }
    let node2 = &configs[1];
    assert_eq!(node2.servers.len(), 3);
    assert_eq!(node2.this_server().publish_port, 7203);
    assert_eq!(node2.this_server().publish_addr(), "127.0.0.1:7203");
}

/// reference.xml parses, and the defaults it spells out are the real ones
/// (<media> and its <edit> included).
#[test]
fn config_shipped_reference_parses() {
    let c = parse(REFERENCE, "reference.xml").unwrap();
    assert_eq!(c.raft, RaftTiming::default());
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.time, TimeSync::default());
    assert_eq!(c.master, MasterPolicy::default());
    assert_eq!(c.gateway, GatewayConfig::default());
    assert_eq!(c.messages, MessagesConfig::default());
    assert_eq!(c.log, LogConfig::default());
    assert_eq!(c.auth, dev_key(), "same key as cluster-3 node files");
    assert_eq!(c.tls, None, "<tls> is only shown in a comment");
    assert_eq!(
            c.media,
            MediaConfig {
                key: MediaConfig::derived_key(&dev_key()),
                ..MediaConfig::default()
            },
            "<media> and <edit> at their defaults; the key is derived (key-file only shown in a comment)"
        );
    assert_eq!(c.media.edit, crate::media::edit::EditRules::default());
    assert!(c.media.key.is_some());
    assert_eq!(c.servers.len(), 3);
    assert_eq!(c.node, 1);
}

/// Every .xml under conf/ is in SHIPPED (so is parsed by these tests), and
/// every entry of SHIPPED matches the file on disk.
#[test]
fn config_shipped_all_files_covered() {
    // file!() is absolute, or relative to the workspace root while tests
    // run in the package directory (node/).
    let here = [PathBuf::from(file!()), PathBuf::from(format!("../{}", file!()))]
        .into_iter()
        .find(|p| p.exists())
        .expect("config/tests.rs found from file!()");
    let conf = here.parent().unwrap().join("../../../conf");
    let mut found = Vec::new();
    let mut dirs = vec![conf.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "xml") {
                let rel = path.strip_prefix(&conf).unwrap();
                found.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    let mut listed: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
    for (name, text) in SHIPPED {
        assert_eq!(std::fs::read_to_string(conf.join(name)).unwrap(), *text, "{name}");
        parse(text, name).unwrap_or_else(|e| panic!("{e}"));
    }
}

// --- syntax ------------------------------------------------------------

/// Comments (even before the root and inside lists), the XML declaration,
/// blank lines and multi-line tags are all accepted.
#[test]
fn config_syntax_comments_decl_whitespace_allowed() {
    let text = format!(
        "<?xml version=\"1.0\"?>\n<!-- a -->\n\n{}<!-- end -->\n",
        edit("<servers>", "<servers>\n  <!-- list -->\n")
            .replace("<server number=\"2\"", "<server\n      number=\"2\"")
    );
    let c = parse(&text, "t.xml").unwrap();
    assert_eq!(c, Config { source: "t.xml".into(), ..base() });
}

/// A mismatched end tag is malformed XML, reported at its line.
#[test]
fn config_syntax_mismatched_end_tag() {
    let err = refused(&edit("</servers>", "</server>"), 6, None, "malformed XML");
    assert_eq!(err.column(), Some(3));
}

/// An unquoted attribute value is malformed XML, reported at its line.
#[test]
fn config_syntax_unquoted_attribute() {
    refused(&edit("sync-port=\"7201\"", "sync-port=7201"), 5, None, "must be quoted");
}

/// An element left open at the end of the file is reported, naming it.
#[test]
fn config_syntax_unclosed_element() {
    let text = BASE.replace("</herald>\n", "");
    refused(&text, 7, None, "<herald> opened at line 1 is not closed");
}

/// An empty document, a second root element and a wrong root are refused.
#[test]
fn config_syntax_root_element() {
    refused("<!-- nothing -->\n", 2, None, "no root element");
    refused(&format!("{BASE}<herald/>\n"), 8, None, "second root element");
    refused("\n<config/>\n", 2, Some("<config>"), "expected <herald>");
}

/// Text, CDATA or entity references inside an element are refused, naming
/// the element; non-blank text outside the root is malformed.
#[test]
fn config_syntax_text_content_refused() {
    let e = refused(&edit("</servers>", "oops</servers>"), 6, None, "unexpected text \"oops\"");
    assert!(e.to_string().contains("<servers>"), "{e}");
    refused(&edit("<servers>", "<servers><![CDATA[x]]>"), 3, None, "<servers>");
    refused(&edit("<servers>", "<servers>&amp;"), 3, None, "<servers>");
    refused(&format!("{BASE}trailing\n"), 8, None, "outside the root element");
}

/// DOCTYPE declarations and processing instructions are refused.
#[test]
fn config_syntax_doctype_and_pi_refused() {
    refused(&format!("<!DOCTYPE herald>\n{BASE}"), 1, None, "DOCTYPE");
    refused(&edit("<servers>", "<servers>\n<?pi x?>"), 4, None, "processing instructions");
}

// --- unknown -----------------------------------------------------------

/// An unknown element is refused at its own line, at every level.
#[test]
fn config_unknown_element_refused() {
    refused(&with("<cache size=\"1\"/>"), 7, Some("<cache>"), "unknown element");
    refused(
        &edit("</servers>", "  <host/>\n  </servers>"),
        6,
        Some("<host>"),
        "allowed here: <server>",
    );
    refused(
        &edit("data-dir=\"./d\"/>", "data-dir=\"./d\">\n    <x/>\n  </node>"),
        3,
        Some("<x>"),
        "<node> takes no child elements",
    );
}

/// An unknown attribute is refused on every element, naming it.
#[test]
fn config_unknown_attribute_refused() {
    refused(
        &edit("cluster=\"c\"", "cluster=\"c\" version=\"2\""),
        1,
        Some("version"),
        "unknown attribute",
    );
    refused(
        &edit("data-dir=\"./d\"", "data-dir=\"./d\" datadir=\"x\""),
        2,
        Some("datadir"),
        "<node>",
    );
    refused(&edit("<servers>", "<servers count=\"2\">"), 3, Some("count"), "<servers>");
    refused(
        &edit("host=\"127.0.0.1\"", "host=\"127.0.0.1\" port=\"1\""),
        4,
        Some("port"),
        "<server number=\"1\">",
    );
    refused(&with("<raft heartbeat=\"5\"/>"), 7, Some("heartbeat"), "<raft>");
    refused(&with("<limits max-ids=\"5\"/>"), 7, Some("max-ids"), "<limits>");
}

// --- missing -----------------------------------------------------------

/// A missing required element is named, at the line of its parent.
#[test]
fn config_missing_element_refused() {
    let no_node = BASE.replace("  <node number=\"1\" data-dir=\"./d\"/>\n", "");
    refused(&no_node, 1, Some("<node>"), "missing required element");
    let no_servers =
        "\n<herald cluster=\"c\">\n  <node number=\"1\" data-dir=\"./d\"/>\n</herald>\n";
    refused(no_servers, 2, Some("<servers>"), "missing required element");
}

/// A missing required attribute is named, at the line of its element.
#[test]
fn config_missing_attribute_refused() {
    refused(&edit(" cluster=\"c\"", ""), 1, Some("cluster"), "missing required attribute");
    refused(&edit("number=\"1\" data-dir", "data-dir"), 2, Some("number"), "missing");
    refused(&edit(" data-dir=\"./d\"", ""), 2, Some("data-dir"), "missing");
    for field in ["number", "host", "sync-port", "time-port", "publish-port"] {
        let line5 = BASE.lines().nth(4).unwrap();
        let attr = line5.split(' ').find(|a| a.starts_with(&format!("{field}="))).unwrap();
        let text =
            BASE.replace(line5, &line5.replace(&format!(" {}", attr.trim_end_matches("/>")), ""));
        let err = refused(&text, 5, Some(field), "missing required attribute");
        assert_eq!(err.column(), Some(5), "at the element: {err}");
    }
}

// --- type --------------------------------------------------------------

/// Ports must be decimal integers from 1 to 65535.
#[test]
fn config_type_port_refused() {
    for bad in ["abc", "0", "65536", "99999999999999999999999", "-1", "+7201", " 7201", ""] {
        let text = edit("sync-port=\"7201\"", &format!("sync-port=\"{bad}\""));
        refused(&text, 5, Some("sync-port"), "1 to 65535");
    }
    refused(&edit("time-port=\"7202\"", "time-port=\"7.2\""), 5, Some("time-port"), "\"7.2\"");
    refused(
        &edit("publish-port=\"7203\"", "publish-port=\"0x1c23\""),
        5,
        Some("publish-port"),
        "integer",
    );
    let max = parse(&edit("publish-port=\"7203\"", "publish-port=\"65535\""), "t.xml").unwrap();
    assert_eq!(max.server(2).unwrap().publish_port, 65535);
}

/// Server and node numbers must be integers of at least 1.
#[test]
fn config_type_number_refused() {
    refused(
        &edit("<server number=\"2\"", "<server number=\"0\""),
        5,
        Some("number"),
        "out of range",
    );
    refused(&edit("<server number=\"2\"", "<server number=\"two\""), 5, Some("number"), "\"two\"");
    refused(&edit("<node number=\"1\"", "<node number=\"0\""), 2, Some("number"), "<node>");
}

/// Empty or blank host, cluster and data-dir are refused, as is a host with
/// whitespace inside.
#[test]
fn config_type_empty_text_refused() {
    refused(&edit("host=\"127.0.0.1\"", "host=\"\""), 4, Some("host"), "must not be empty");
    refused(&edit("host=\"127.0.0.1\"", "host=\"  \""), 4, Some("host"), "must not be empty");
    refused(&edit("host=\"127.0.0.1\"", "host=\"a b\""), 4, Some("host"), "whitespace");
    refused(&edit("cluster=\"c\"", "cluster=\"\""), 1, Some("cluster"), "must not be empty");
    refused(&edit("data-dir=\"./d\"", "data-dir=\"\""), 2, Some("data-dir"), "must not be empty");
}

/// join accepts exactly "true" or "false" and defaults to false.
#[test]
fn config_type_join_bool() {
    assert!(!base().join);
    let c = parse(&edit("data-dir=\"./d\"", "data-dir=\"./d\" join=\"true\""), "t.xml").unwrap();
    assert!(c.join);
    refused(
        &edit("data-dir=\"./d\"", "data-dir=\"./d\" join=\"yes\""),
        2,
        Some("join"),
        "\"true\" or \"false\"",
    );
}

/// Attribute values are unescaped; an unknown entity is refused.
#[test]
fn config_type_entities() {
    let c = parse(&edit("cluster=\"c\"", "cluster=\"a&amp;b\""), "t.xml").unwrap();
    assert_eq!(c.cluster, "a&b");
    refused(&edit("cluster=\"c\"", "cluster=\"a&bogus;\""), 1, Some("cluster"), "bogus");
}

// --- duplicate ---------------------------------------------------------

/// Two servers with the same number are refused at the second one.
#[test]
fn config_duplicate_server_number_refused() {
    refused(
        &edit("<server number=\"2\"", "<server number=\"1\""),
        5,
        Some("number"),
        "duplicate server number 1 (first used at line 4)",
    );
}

/// The same host:port used by two servers is refused at the later one,
/// naming the other server and field.
#[test]
fn config_duplicate_port_across_servers_refused() {
    let err = refused(
        &edit("sync-port=\"7201\"", "sync-port=\"7101\""),
        5,
        Some("sync-port"),
        "duplicate port 7101 (also used by server 1 sync-port)",
    );
    assert_eq!(
            err.to_string(),
            "t.xml:5:41: <server number=\"2\"> sync-port: duplicate port 7101 (also used by server 1 sync-port)"
        );
    refused(
        &edit("time-port=\"7202\"", "time-port=\"7103\""),
        5,
        Some("time-port"),
        "also used by server 1 publish-port",
    );
}

/// The same port twice within one server is refused too.
#[test]
fn config_duplicate_port_within_server_refused() {
    refused(
        &edit("publish-port=\"7203\"", "publish-port=\"7201\""),
        5,
        Some("publish-port"),
        "also used by server 2 sync-port",
    );
}

/// The same port on different hosts is fine; host comparison ignores case.
#[test]
fn config_duplicate_port_other_host_allowed() {
    let text = edit("<server number=\"2\" host=\"127.0.0.1\" sync-port=\"7201\" time-port=\"7202\" publish-port=\"7203\"",
            "<server number=\"2\" host=\"10.0.0.2\" sync-port=\"7101\" time-port=\"7102\" publish-port=\"7103\"");
    assert_eq!(parse(&text, "t.xml").unwrap().server(2).unwrap().sync_addr(), "10.0.0.2:7101");
    let text = edit("host=\"127.0.0.1\"", "host=\"LOCALHOST\"").replacen(
        "host=\"127.0.0.1\" sync-port=\"7201\"",
        "host=\"localhost\" sync-port=\"7101\"",
        1,
    );
    refused(&text, 5, Some("sync-port"), "duplicate port 7101");
}

/// A repeated attribute is refused at the repeat.
#[test]
fn config_duplicate_attribute_refused() {
    refused(
        &edit("host=\"127.0.0.1\"", "host=\"127.0.0.1\"\n       host=\"x\""),
        5,
        Some("host"),
        "duplicate attribute (first given at line 4)",
    );
}

/// A second <node>, <servers>, <raft> or <limits> is refused at its line.
#[test]
fn config_duplicate_element_refused() {
    refused(
        &with("<node number=\"2\" data-dir=\"./e\"/>"),
        7,
        Some("<node>"),
        "duplicate element (first given at line 2)",
    );
    refused(&with("<servers/>"), 7, Some("<servers>"), "duplicate element (first given at line 3)");
    let two_raft = with("<raft/>").replace("</herald>", "  <raft/>\n</herald>");
    refused(&two_raft, 8, Some("<raft>"), "duplicate element (first given at line 7)");
    let two_limits = with("<limits/>").replace("</herald>", "  <limits/>\n</herald>");
    refused(&two_limits, 8, Some("<limits>"), "duplicate element");
}

// --- membership --------------------------------------------------------

/// <node number> must name a server of the list.
#[test]
fn config_membership_node_not_in_servers_refused() {
    refused(
        &edit("<node number=\"1\"", "<node number=\"3\""),
        2,
        Some("number"),
        "node 3 is not in the server list (servers: 1, 2)",
    );
}

/// An empty <servers> is refused at its line.
#[test]
fn config_membership_zero_servers_refused() {
    let text = "<herald cluster=\"c\">\n  <node number=\"1\" data-dir=\"d\"/>\n  <servers>\n  </servers>\n</herald>";
    refused(text, 3, Some("<server>"), "at least one <server>");
    refused(
        &text.replace("<servers>\n  </servers>", "<servers/>"),
        3,
        Some("<server>"),
        "at least one",
    );
}

/// Servers are sorted by number whatever the file order; lookups work.
#[test]
fn config_membership_sorted_and_lookup() {
    let text = edit("<server number=\"1\"", "<server number=\"9\"")
        .replace("<node number=\"1\"", "<node number=\"9\"");
    let c = parse(&text, "t.xml").unwrap();
    let numbers: Vec<u64> = c.servers.iter().map(|s| s.number).collect();
    assert_eq!(numbers, vec![2, 9]);
    assert_eq!(c.this_server().sync_port, 7101);
    assert_eq!(c.server(2).unwrap().time_addr(), "127.0.0.1:7202");
    assert!(c.server(1).is_none());
}

/// An IPv6 host is bracketed in addresses.
#[test]
fn config_membership_ipv6_address() {
    let c = parse(&edit("host=\"127.0.0.1\"", "host=\"::1\""), "t.xml").unwrap();
    assert_eq!(c.server(1).unwrap().sync_addr(), "[::1]:7101");
}

// --- time and master ---------------------------------------------------

/// <time> and <master> values are read; bad values are refused at their line.
#[test]
fn config_time_master_values_read_and_checked() {
    let c =
        parse(&with(r#"<time interval-ms="250" tolerance-ms="2" samples="8"/>"#), "t.xml").unwrap();
    assert_eq!(c.time, TimeSync { interval_ms: 250, tolerance_ms: 2, samples: 8 });
    let c = parse(&with(r#"<master prefer-lowest="false" hold-down-ms="0"/>"#), "t.xml").unwrap();
    assert_eq!(c.master, MasterPolicy { prefer_lowest: false, hold_down_ms: 0 });
    let e = parse(&with(r#"<time samples="17"/>"#), "t.xml").unwrap_err();
    assert_eq!(e.field(), Some("samples"));
    let e = parse(&with(r#"<master prefer-lowest="yes"/>"#), "t.xml").unwrap_err();
    assert_eq!(e.field(), Some("prefer-lowest"));
    let e = parse(&with(r#"<time period="1"/>"#), "t.xml").unwrap_err();
    assert_eq!(e.field(), Some("period"));
}

// --- gateway and messages ----------------------------------------------

/// <gateway> values are read, all attributes at once.
#[test]
fn config_gateway_values_read() {
    let c = parse(&with(r#"<gateway heartbeat-ms="100" heartbeat-misses="100" grace-ms="100" push-timeout-ms="0" max-sessions="10000000" load-poll-ms="60000"/>"#), "t.xml").unwrap();
    assert_eq!(
        c.gateway,
        GatewayConfig {
            heartbeat_ms: 100,
            heartbeat_misses: 100,
            grace_ms: 100,
            push_timeout_ms: 0,
            max_sessions: 10_000_000,
            load_poll_ms: 60_000,
        }
    );
    assert_eq!(c.gateway.heartbeat_timeout_ms(), 10_000);
}

/// <messages> values are read, all attributes at once (the upper bounds).
#[test]
fn config_messages_values_read() {
    let c = parse(&with(r#"<messages max-body-bytes="1048576" quota-per-user="1000000" idempotency-window-s="2592000" max-recipients="100000" max-ttl-s="31536000"/>"#), "t.xml").unwrap();
    assert_eq!(
        c.messages,
        MessagesConfig {
            max_body_bytes: 1 << 20,
            quota_per_user: 1_000_000,
            idempotency_window_s: 30 * 86_400,
            max_recipients: 100_000,
            max_ttl_s: 365 * 86_400,
        }
    );
}

/// Every bound of <gateway> and <messages> is refused one step outside,
/// at line 7 and naming the attribute; the bound itself is accepted.
#[test]
fn config_gateway_messages_bounds_refused() {
    // (element, attribute, lowest accepted, highest accepted)
    let bounds: &[(&str, &str, u64, Option<u64>)] = &[
        ("gateway", "heartbeat-ms", 100, Some(3_600_000)),
        ("gateway", "heartbeat-misses", 1, Some(100)),
        ("gateway", "grace-ms", 100, None),
        ("gateway", "push-timeout-ms", 0, Some(60_000)),
        ("gateway", "max-sessions", 1, Some(10_000_000)),
        ("gateway", "load-poll-ms", 50, Some(60_000)),
        ("messages", "max-body-bytes", 1, Some(1_048_576)),
        ("messages", "quota-per-user", 1, Some(1_000_000)),
        ("messages", "idempotency-window-s", 1, Some(2_592_000)),
        ("messages", "max-recipients", 1, Some(100_000)),
        ("messages", "max-ttl-s", 1, Some(31_536_000)),
    ];
    for &(el, field, min, max) in bounds {
        let line = |v: u64| with(&format!("<{el} {field}=\"{v}\"/>"));
        parse(&line(min), "t.xml").unwrap_or_else(|e| panic!("{e}"));
        if min > 0 {
            let e = refused(&line(min - 1), 7, Some(field), "out of range");
            assert!(e.to_string().contains(&format!("<{el}>")), "{e}");
        }
        if let Some(max) = max {
            parse(&line(max), "t.xml").unwrap_or_else(|e| panic!("{e}"));
            refused(&line(max + 1), 7, Some(field), "out of range");
        }
    }
    refused(&with("<gateway heartbeat-ms=\"1s\"/>"), 7, Some("heartbeat-ms"), "\"1s\"");
}

/// max-body-bytes must be less than <limits max-request-bytes>: refused at
/// <messages> max-body-bytes, or at <limits> when <messages> is absent.
#[test]
fn config_messages_body_not_below_request_refused() {
    let text = with("<limits max-request-bytes=\"1000\"/>")
        .replace("</herald>", "  <messages max-body-bytes=\"1000\"/>\n</herald>");
    let e = refused(
        &text,
        8,
        Some("max-body-bytes"),
        "max-body-bytes (1000) must be less than <limits max-request-bytes> (1000)",
    );
    assert!(e.to_string().contains("<messages>"), "{e}");
    assert!(e.to_string().contains("carries its body"), "{e}");
    let c =
        parse(&text.replace("=\"1000\"/>\n</herald>", "=\"999\"/>\n</herald>"), "t.xml").unwrap();
    assert_eq!(c.messages.max_body_bytes, 999);
    let e = refused(
        &with("<limits max-request-bytes=\"65536\"/>"),
        7,
        Some("max-request-bytes"),
        "max-body-bytes (65536) must be less than <limits max-request-bytes> (65536)",
    );
    assert!(e.to_string().contains("<limits>"), "{e}");
}

// --- auth --------------------------------------------------------------

/// <auth mode="hmac" key> gives the key's bytes.
#[test]
fn config_auth_hmac_key_read() {
    let c = parse(&with(r#"<auth mode="hmac" key="0123456789abcdef"/>"#), "t.xml").unwrap();
    assert_eq!(
        c.auth,
        AuthConfig::Hmac {
            key: b"0123456789abcdef".to_vec(),
            max_token_lifetime_s: DEFAULT_MAX_TOKEN_LIFETIME_S
        }
    );
}

/// Debug output (printed by `heraldd --check`) never shows the key.
#[test]
fn config_auth_debug_redacts_key() {
    let c = parse(&with(r#"<auth mode="hmac" key="secret-secret-secret"/>"#), "t.xml").unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("20 bytes, redacted"), "{shown}");
}

/// <auth mode="external"> gives url and timeout (default 2000).
#[test]
fn config_auth_external_read() {
    let c = parse(
        &with(r#"<auth mode="external" url="http://127.0.0.1:8080/check" timeout-ms="60000"/>"#),
        "t.xml",
    )
    .unwrap();
    assert_eq!(
        c.auth,
        AuthConfig::External { url: "http://127.0.0.1:8080/check".into(), timeout_ms: 60_000 }
    );
    let c = parse(&with(r#"<auth mode="external" url="http://auth:80/"/>"#), "t.xml").unwrap();
    assert_eq!(c.auth, AuthConfig::External { url: "http://auth:80/".into(), timeout_ms: 2_000 });
}

/// A missing or unknown mode is refused at its line, listing the valid modes.
#[test]
fn config_auth_mode_refused() {
    refused(
        &with(r#"<auth key="0123456789abcdef"/>"#),
        7,
        Some("mode"),
        "missing required attribute (valid modes: \"hmac\", \"external\")",
    );
    refused(
        &with(r#"<auth mode="jwt"/>"#),
        7,
        Some("mode"),
        "unknown mode \"jwt\" (valid modes: \"hmac\", \"external\")",
    );
}

/// A key under 16 bytes is refused; 16 bytes is accepted.
#[test]
fn config_auth_key_too_short_refused() {
    refused(
        &with(r#"<auth mode="hmac" key="0123456789abcde"/>"#),
        7,
        Some("key"),
        "the key is 15 bytes; at least 16 are required",
    );
    let e = refused(&with(r#"<auth mode="hmac" key=""/>"#), 7, Some("key"), "0 bytes");
    assert!(!e.to_string().contains("0123"), "{e}");
}

/// key and key-file together, or neither, are refused.
#[test]
fn config_auth_key_and_key_file_refused() {
    refused(
        &with(r#"<auth mode="hmac" key="0123456789abcdef" key-file="k"/>"#),
        7,
        Some("key-file"),
        "either key or key-file, not both",
    );
    refused(&with(r#"<auth mode="hmac"/>"#), 7, Some("key"), "needs key or key-file");
}

/// Attributes of the other mode, or unknown ones, are refused.
#[test]
fn config_auth_attribute_of_other_mode_refused() {
    refused(
        &with(r#"<auth mode="hmac" key="0123456789abcdef" url="http://a/"/>"#),
        7,
        Some("url"),
        "not used with mode=\"hmac\" (allowed: mode, key, key-file, max-token-lifetime-s)",
    );
    refused(
        &with(r#"<auth mode="external" url="http://a/" key="0123456789abcdef"/>"#),
        7,
        Some("key"),
        "not used with mode=\"external\"",
    );
    refused(&with(r#"<auth mode="hmac" colour="red"/>"#), 7, Some("colour"), "unknown attribute");
}

/// key-file is read relative to the config file's directory, trailing
/// whitespace trimmed; an absolute path works from parse() too.
#[test]
fn config_auth_key_file_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let key_path = dir.path().join("keys/hmac.key");
    std::fs::write(&key_path, "0123456789abcdef-file \r\n\n").unwrap();
    let path = dir.path().join("n.xml");
    std::fs::write(&path, with(r#"<auth mode="hmac" key-file="keys/hmac.key"/>"#)).unwrap();
    let want = AuthConfig::Hmac {
        key: b"0123456789abcdef-file".to_vec(),
        max_token_lifetime_s: DEFAULT_MAX_TOKEN_LIFETIME_S,
    };
    assert_eq!(load(&path).unwrap().auth, want);
    let text = with(&format!("<auth mode=\"hmac\" key-file=\"{}\"/>", key_path.display()));
    assert_eq!(parse(&text, "t.xml").unwrap().auth, want);
    assert_eq!(parse(&text, EMBEDDED_NAME).unwrap().auth, want);
}

/// An unreadable key-file is refused naming the field and the resolved
/// path; a key-file whose key is too short too.
#[test]
fn config_auth_key_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.xml");
    std::fs::write(&path, with(r#"<auth mode="hmac" key-file="missing.key"/>"#)).unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!((e.line(), e.field()), (Some(7), Some("key-file")));
    let missing = dir.path().join("missing.key");
    assert!(e.to_string().contains(&format!("cannot read {}", missing.display())), "{e}");
    std::fs::write(&missing, "short\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.field(), Some("key-file"));
    assert!(e.to_string().contains("the key is 5 bytes"), "{e}");
    refused(&with(r#"<auth mode="hmac" key-file=" "/>"#), 7, Some("key-file"), "must not be empty");
}

/// An external url that is not http:// is refused (https says why); a
/// missing url or a timeout out of range too.
#[test]
fn config_auth_external_url_refused() {
    refused(
        &with(r#"<auth mode="external" url="https://auth/check"/>"#),
        7,
        Some("url"),
        "https is not supported for the auth call",
    );
    refused(
        &with(r#"<auth mode="external" url="ftp://auth/check"/>"#),
        7,
        Some("url"),
        "must start with http://",
    );
    refused(
        &with(r#"<auth mode="external" url="http://"/>"#),
        7,
        Some("url"),
        "expected http://host:port/path",
    );
    refused(&with(r#"<auth mode="external"/>"#), 7, Some("url"), "missing required attribute");
    for t in ["0", "60001"] {
        refused(
            &with(&format!("<auth mode=\"external\" url=\"http://a/\" timeout-ms=\"{t}\"/>")),
            7,
            Some("timeout-ms"),
            "from 1 to 60000",
        );
    }
}

// --- tls ---------------------------------------------------------------

/// <tls> paths are resolved against the config file's directory; ca is
/// optional.
#[test]
fn config_tls_read() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "PEM").unwrap();
    }
    let path = dir.path().join("n.xml");
    std::fs::write(&path, with(r#"<tls cert="cert.pem" key="key.pem" ca="ca.pem"/>"#)).unwrap();
    assert_eq!(
        load(&path).unwrap().tls,
        Some(TlsConfig {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            ca: Some(dir.path().join("ca.pem")),
        })
    );
    let text = with(&format!(
        "<tls cert=\"{}\" key=\"{}\"/>",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    ));
    assert_eq!(
        parse(&text, "t.xml").unwrap().tls,
        Some(TlsConfig {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            ca: None,
        })
    );
}

/// A missing cert, key or ca file (or a directory) is refused naming the
/// field and the path; cert and key are required.
#[test]
fn config_tls_missing_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), "PEM").unwrap();
    let path = dir.path().join("n.xml");
    let load_with = |line: &str| {
        std::fs::write(&path, with(line)).unwrap();
        load(&path).unwrap_err()
    };
    let e = load_with(r#"<tls cert="cert.pem" key="key.pem"/>"#);
    assert_eq!((e.line(), e.field()), (Some(7), Some("cert")));
    let cert = dir.path().join("cert.pem");
    assert!(e.to_string().contains(&format!("cert: cannot read {}", cert.display())), "{e}");
    let e = load_with(r#"<tls cert="key.pem" key="key.pem" ca="nope.pem"/>"#);
    assert_eq!(e.field(), Some("ca"));
    assert!(e.to_string().contains("nope.pem"), "{e}");
    let e = load_with(r#"<tls cert="key.pem" key="."/>"#);
    assert_eq!(e.field(), Some("key"));
    assert!(e.to_string().contains("is not a regular file"), "{e}");
    refused(&with(r#"<tls key="k.pem"/>"#), 7, Some("cert"), "missing required attribute");
    refused(&with(r#"<tls cert="c.pem"/>"#), 7, Some("cert"), "cannot read c.pem");
}

// --- new elements: shared rules ----------------------------------------

/// Without <gateway>, <messages>, <auth> and <tls> the defaults apply:
/// no auth (every session refused) and plaintext; empty elements default
/// every attribute.
#[test]
fn config_defaults_new_elements() {
    let c = base();
    assert_eq!(c.gateway, GatewayConfig::default());
    assert_eq!(c.messages, MessagesConfig::default());
    assert_eq!(c.auth, AuthConfig::Unconfigured);
    assert_eq!(c.tls, None);
    assert_eq!((c.gateway.heartbeat_ms, c.messages.max_body_bytes), (30_000, 65_536));
    let c = parse(&with("<gateway/>").replace("</herald>", "  <messages/>\n</herald>"), "t.xml")
        .unwrap();
    assert_eq!((c.gateway, c.messages), (GatewayConfig::default(), MessagesConfig::default()));
    let c = parse(&with(r#"<gateway max-sessions="5"/>"#), "t.xml").unwrap();
    assert_eq!(c.gateway, GatewayConfig { max_sessions: 5, ..GatewayConfig::default() });
}

/// The new elements may come anywhere among <herald>'s children.
#[test]
fn config_new_elements_any_position() {
    let text = edit(
            "  <node number",
            "  <auth mode=\"hmac\" key=\"0123456789abcdef\"/>\n  <messages max-ttl-s=\"5\"/>\n  <node number",
        )
        .replace("</servers>", "</servers>\n  <gateway grace-ms=\"100\"/>");
    let c = parse(&text, "t.xml").unwrap();
    assert_eq!(c.messages.max_ttl_s, 5);
    assert_eq!(c.gateway.grace_ms, 100);
    assert!(matches!(c.auth, AuthConfig::Hmac { .. }));
}

/// An unknown attribute of each new element is refused at its line.
#[test]
fn config_new_elements_unknown_attribute_refused() {
    for el in ["gateway", "messages", "tls"] {
        let e = refused(
            &with(&format!("<{el} colour=\"red\"/>")),
            7,
            Some("colour"),
            "unknown attribute (allowed: ",
        );
        assert!(e.to_string().contains(&format!("<{el}>")), "{e}");
    }
    refused(
        &with("<messages>\n    <x/>\n  </messages>"),
        8,
        Some("<x>"),
        "<messages> takes no child elements",
    );
}

/// A second <gateway>, <messages>, <auth> or <tls> is refused at its line.
#[test]
fn config_new_elements_duplicate_refused() {
    for line in [
        "<gateway/>",
        "<messages/>",
        r#"<auth mode="hmac" key="0123456789abcdef"/>"#,
        r#"<tls cert="c" key="k"/>"#,
    ] {
        let name = line[1..].split([' ', '/']).next().unwrap();
        let text = with(line).replace("</herald>", &format!("  {line}\n</herald>"));
        refused(&text, 8, Some(&format!("<{name}>")), "duplicate element (first given at line 7)");
    }
}

// --- media -------------------------------------------------------------

/// The <auth> line used by the media tests (a 16-byte HMAC key).
const AUTH_HMAC: &str = r#"<auth mode="hmac" key="0123456789abcdef"/>"#;

/// BASE with `<auth>` (when given) as line 7 and `media` from line 8 on,
/// or `media` from line 7 on without `<auth>`.
fn with_media(auth: Option<&str>, media: &str) -> String {
    match auth {
        Some(auth) => with(auth).replace("</herald>", &format!("  {media}\n</herald>")),
        None => with(media),
    }
}

/// `<media>` holding `edit` as its only child: `<media>` is line 7, the
/// child line 8.
fn with_edit(edit: &str) -> String {
    with(&format!("<media>\n    {edit}\n  </media>"))
}

/// Without <media> every attribute has its documented default and edits
/// are off; the media key is derived from the <auth mode="hmac"> key (32
/// bytes, not the auth key itself, the same on every node), and there is
/// none with external auth or without <auth>.
#[test]
fn config_media_defaults_when_absent() {
    let c = base();
    let want = MediaConfig {
        max_bytes: 4 << 30,
        quota_bytes_per_user: 0,
        reserve_bytes: 256 << 20,
        replicas: 0,
        upload_ttl_ms: 600_000,
        access_ttl_ms: 300_000,
        gc_grace_ms: 3_600_000,
        repair_interval_ms: 5_000,
        max_uploads: 64,
        max_uploads_per_user: 4,
        body_timeout_ms: 30_000,
        key: None,
        edit: crate::media::edit::EditRules {
            enabled: false,
            max_width: 0,
            max_height: 0,
            format: None,
            quality: 85,
            max_pixels: 100_000_000,
        },
    };
    assert_eq!(c.media, want, "no <auth>: no media key");
    assert_eq!(MediaConfig::default(), want);

    let c = parse(&with(AUTH_HMAC), "t.xml").unwrap();
    let key = c.media.key.clone().expect("derived from the hmac key");
    assert_eq!(key.len(), 32, "an HMAC-SHA256 output");
    assert_ne!(key, b"0123456789abcdef".to_vec(), "not the auth key itself");
    assert_eq!(Some(key.clone()), MediaConfig::derived_key(&c.auth));
    assert_eq!(c.media, MediaConfig { key: Some(key.clone()), ..want.clone() });
    let again = parse(&with(AUTH_HMAC), "other.xml").unwrap();
    assert_eq!(again.media.key, Some(key.clone()), "every node derives the same key");
    let other = parse(&with(r#"<auth mode="hmac" key="0123456789abcdeX"/>"#), "t.xml").unwrap();
    assert_ne!(other.media.key, Some(key), "another auth key, another media key");

    let c = parse(&with(r#"<auth mode="external" url="http://auth:80/"/>"#), "t.xml").unwrap();
    assert_eq!(c.media, want, "external auth: no media key");
    assert_eq!(MediaConfig::derived_key(&c.auth), None);
    assert_eq!(MediaConfig::derived_key(&AuthConfig::Unconfigured), None);

    let c = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME).unwrap();
    assert_eq!(c.media.key, MediaConfig::derived_key(&dev_key()));
    assert!(c.media.key.is_some(), "the embedded default can serve media");
}

/// An empty <media/> means the same as no <media> (derived key
/// included); an empty <edit/> turns edits on with every other rule at
/// its default.
#[test]
fn config_media_empty_elements_default() {
    let absent = parse(&with(AUTH_HMAC), "t.xml").unwrap().media;
    let c = parse(&with_media(Some(AUTH_HMAC), "<media/>"), "t.xml").unwrap();
    assert_eq!(c.media, absent);
    let c = parse(&with_media(Some(AUTH_HMAC), "<media></media>"), "t.xml").unwrap();
    assert_eq!(c.media, absent);
    let c = parse(&with_media(Some(AUTH_HMAC), "<media><edit/></media>"), "t.xml").unwrap();
    assert_eq!(
        c.media,
        MediaConfig {
            edit: crate::media::edit::EditRules {
                enabled: true,
                ..crate::media::edit::EditRules::default()
            },
            ..absent
        }
    );
}

/// Every <media> and <edit> attribute is read, all at once; an explicit
/// key is used as given (not derived), with hmac and external auth alike.
#[test]
fn config_media_values_read() {
    let media = r#"<media max-bytes="1048576" quota-bytes-per-user="10485760" reserve-bytes="1073741824" replicas="2" upload-ttl-ms="1000" access-ttl-ms="86400000" gc-grace-ms="0" repair-interval-ms="100" max-uploads="10000" max-uploads-per-user="10000" body-timeout-ms="600000" key="media-key-0123456789">
    <edit enabled="true" max-width="1920" max-height="1080" format="webp" quality="1" max-pixels="1000000000"/>
  </media>"#;
    let want = MediaConfig {
        max_bytes: 1 << 20,
        quota_bytes_per_user: 10 << 20,
        reserve_bytes: 1 << 30,
        replicas: 2,
        upload_ttl_ms: 1_000,
        access_ttl_ms: 86_400_000,
        gc_grace_ms: 0,
        repair_interval_ms: 100,
        max_uploads: 10_000,
        max_uploads_per_user: 10_000,
        body_timeout_ms: 600_000,
        key: Some(b"media-key-0123456789".to_vec()),
        edit: crate::media::edit::EditRules {
            enabled: true,
            max_width: 1920,
            max_height: 1080,
            format: Some(crate::media::edit::OutFormat::Webp),
            quality: 1,
            max_pixels: 1_000_000_000,
        },
    };
    for auth in [AUTH_HMAC, r#"<auth mode="external" url="http://auth:80/"/>"#] {
        let c = parse(&with_media(Some(auth), media), "t.xml").unwrap();
        assert_eq!(c.media, want, "with {auth}");
    }
    let c = parse(&with_media(None, media), "t.xml").unwrap();
    assert_eq!(c.media, want, "without <auth>");

    // The other ends of each range, and the other formats.
    let c = parse(&with(r#"<media max-bytes="68719476736" replicas="15" upload-ttl-ms="86400000" access-ttl-ms="1000" gc-grace-ms="2592000000" repair-interval-ms="3600000" max-uploads="1" max-uploads-per-user="1" body-timeout-ms="1000"/>"#), "t.xml").unwrap();
    assert_eq!(
        (c.media.max_bytes, c.media.replicas, c.media.upload_ttl_ms, c.media.access_ttl_ms),
        (MAX_MEDIA_BYTES_CAP, 15, 86_400_000, 1_000)
    );
    assert_eq!(
        (c.media.gc_grace_ms, c.media.repair_interval_ms, c.media.max_uploads),
        (30 * 86_400_000, 3_600_000, 1)
    );
    assert_eq!((c.media.max_uploads_per_user, c.media.body_timeout_ms), (1, 1_000));
    use crate::media::edit::OutFormat;
    for (v, want) in [
        ("jpeg", Some(OutFormat::Jpeg)),
        ("png", Some(OutFormat::Png)),
        ("webp", Some(OutFormat::Webp)),
        ("keep", None),
    ] {
        let c = parse(&with_edit(&format!(r#"<edit format="{v}" enabled="false" quality="100" max-width="65535" max-height="0" max-pixels="1"/>"#)), "t.xml").unwrap();
        let e = &c.media.edit;
        assert_eq!(e.format, want, "format={v}");
        assert_eq!(
            (e.enabled, e.quality, e.max_width, e.max_height, e.max_pixels),
            (false, 100, 65_535, 0, 1)
        );
    }
}

/// Every bound of <media> and <edit> is refused one step outside, naming
/// the attribute, its element and the range, at the attribute's line;
/// the bound itself is accepted. A lower bound of 0 has "-1" (not an
/// integer) outside it, and an unbounded attribute a number past u64.
#[test]
fn config_media_bounds_refused() {
    // (element, attribute, lowest accepted, highest accepted)
    let bounds: &[(&str, &str, u64, Option<u64>)] = &[
        ("media", "max-bytes", 1, Some(68_719_476_736)),
        ("media", "quota-bytes-per-user", 0, None),
        ("media", "reserve-bytes", 0, None),
        ("media", "replicas", 0, Some(15)),
        ("media", "upload-ttl-ms", 1_000, Some(86_400_000)),
        ("media", "access-ttl-ms", 1_000, Some(86_400_000)),
        ("media", "gc-grace-ms", 0, Some(2_592_000_000)),
        ("media", "repair-interval-ms", 100, Some(3_600_000)),
        ("media", "max-uploads", 1, Some(10_000)),
        ("media", "max-uploads-per-user", 1, Some(10_000)),
        ("media", "body-timeout-ms", 1_000, Some(600_000)),
        ("edit", "max-width", 0, Some(65_535)),
        ("edit", "max-height", 0, Some(65_535)),
        ("edit", "quality", 1, Some(100)),
        ("edit", "max-pixels", 1, Some(1_000_000_000)),
    ];
    for &(el, field, min, max) in bounds {
        type Render = Box<dyn Fn(&str) -> String>;
        let (text, line): (Render, usize) = if el == "media" {
            (Box::new(move |v: &str| with(&format!("<media {field}=\"{v}\"/>"))), 7)
        } else {
            (Box::new(move |v: &str| with_edit(&format!("<edit {field}=\"{v}\"/>"))), 8)
        };
        let ok = |v: u64| {
            parse(&text(&v.to_string()), "t.xml").unwrap_or_else(|e| panic!("{field}={v}: {e}"));
        };
        let out = |v: &str, needle: &str| {
            let e = refused(&text(v), line, Some(field), needle);
            assert!(e.to_string().contains(&format!("<{el}>")), "{e}");
        };
        ok(min);
        if min > 0 {
            out(
                &(min - 1).to_string(),
                &format!("out of range: expected an integer from {min} to"),
            );
        } else {
            out("-1", "expected an integer");
        }
        match max {
            Some(max) => {
                ok(max);
                out(
                    &(max + 1).to_string(),
                    &format!("out of range: expected an integer from {min} to {max}"),
                );
            }
            None => {
                ok(u64::MAX);
                out("18446744073709551616", "out of range");
            }
        }
        out("1k", "\"1k\"");
    }
}

/// An unknown attribute of <media> or of <edit> is refused at its line,
/// naming it and its element and listing the allowed ones; so are
/// attributes of <auth> that <media> does not take.
#[test]
fn config_media_unknown_attribute_refused() {
    let e = refused(
            &with(r#"<media colour="red"/>"#),
            7,
            Some("colour"),
            "unknown attribute (allowed: max-bytes, quota-bytes-per-user, reserve-bytes, replicas, upload-ttl-ms, access-ttl-ms, gc-grace-ms, repair-interval-ms, max-uploads, max-uploads-per-user, body-timeout-ms, key, key-file)",
        );
    assert!(e.to_string().contains("<media>"), "{e}");
    refused(&with(r#"<media mode="hmac"/>"#), 7, Some("mode"), "unknown attribute");
    // The line of the attribute, not of the element, when they differ.
    refused(
        &with("<media\n      max-bytes=\"5\"\n      ttl=\"5\"/>"),
        9,
        Some("ttl"),
        "unknown attribute",
    );
    let e = refused(
        &with_edit(r#"<edit width="100"/>"#),
        8,
        Some("width"),
        "unknown attribute (allowed: enabled, max-width, max-height, format, quality, max-pixels)",
    );
    assert!(e.to_string().contains("<edit>"), "{e}");
    refused(&with_edit(r#"<edit max-bytes="100"/>"#), 8, Some("max-bytes"), "unknown attribute");
}

/// An unknown child of <media> (only <edit> is allowed), any child of
/// <edit>, a second <edit> and a second <media> are refused at their
/// line, naming the element.
#[test]
fn config_media_unknown_child_refused() {
    refused(
        &with("<media>\n    <resize/>\n  </media>"),
        8,
        Some("<resize>"),
        "unknown element (allowed here: <edit>)",
    );
    refused(
        &with("<media>\n    <edit/>\n    <auth/>\n  </media>"),
        9,
        Some("<auth>"),
        "allowed here: <edit>",
    );
    refused(
        &with_edit("<edit>\n      <crop/>\n    </edit>"),
        9,
        Some("<crop>"),
        "<edit> takes no child elements",
    );
    refused(
        &with("<media>\n    <edit/>\n    <edit quality=\"5\"/>\n  </media>"),
        9,
        Some("<edit>"),
        "duplicate element (first given at line 8)",
    );
    refused(
        &with("<media/>\n  <media/>"),
        8,
        Some("<media>"),
        "duplicate element (first given at line 7)",
    );
    // <edit> belongs inside <media>, not directly in <herald>.
    refused(&with("<edit/>"), 7, Some("<edit>"), "unknown element");
    refused(&with("<media>x</media>"), 7, None, "unexpected text \"x\"");
}

/// A format other than jpeg, png, webp or keep is refused naming
/// `format`, the value and the valid ones; a boolean other than "true"
/// or "false" is refused naming `enabled`.
#[test]
fn config_media_edit_format_refused() {
    for bad in ["gif", "", "jpeg2000", "original"] {
        let e = refused(
            &with_edit(&format!(r#"<edit format="{bad}"/>"#)),
            8,
            Some("format"),
            &format!("{bad:?}: expected one of jpeg, png, webp, keep"),
        );
        assert!(e.to_string().contains("<edit>"), "{e}");
    }
    refused(
        &with_edit(r#"<edit enabled="yes"/>"#),
        8,
        Some("enabled"),
        "expected \"true\" or \"false\", got \"yes\"",
    );
}

/// key and key-file together are refused, at the line of <media>, naming
/// key-file.
#[test]
fn config_media_key_and_key_file_refused() {
    refused(
        &with(r#"<media key="0123456789abcdef" key-file="k"/>"#),
        7,
        Some("key-file"),
        "give either key or key-file, not both",
    );
    refused(
        &with_media(Some(AUTH_HMAC), r#"<media key-file="k" key="0123456789abcdef"/>"#),
        8,
        Some("key-file"),
        "not both",
    );
}

/// A media key under 16 bytes is refused naming `key` (without showing
/// it), however the auth is configured; 16 bytes is accepted.
#[test]
fn config_media_key_too_short_refused() {
    let e = refused(
        &with(r#"<media key="0123456789abcde"/>"#),
        7,
        Some("key"),
        "the key is 15 bytes; at least 16 are required",
    );
    assert!(!e.to_string().contains("0123"), "{e}");
    assert!(e.to_string().contains("<media>"), "{e}");
    refused(
        &with_media(Some(AUTH_HMAC), r#"<media key=""/>"#),
        8,
        Some("key"),
        "the key is 0 bytes",
    );
    let c = parse(&with(r#"<media key="0123456789abcdef"/>"#), "t.xml").unwrap();
    assert_eq!(c.media.key, Some(b"0123456789abcdef".to_vec()));
}

/// key-file is read relative to the config file's directory, trailing
/// whitespace trimmed; an absolute path works from parse() too. A
/// missing file (named by its resolved path), a short key in it, or an
/// empty key-file are refused naming key-file.
#[test]
fn config_media_key_file_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let key_path = dir.path().join("keys/media.key");
    std::fs::write(&key_path, "media-key-from-file \r\n\n").unwrap();
    let path = dir.path().join("n.xml");
    std::fs::write(&path, with_media(Some(AUTH_HMAC), r#"<media key-file="keys/media.key"/>"#))
        .unwrap();
    let want = Some(b"media-key-from-file".to_vec());
    assert_eq!(load(&path).unwrap().media.key, want, "the file's key, not the derived one");
    let text = with(&format!("<media key-file=\"{}\"/>", key_path.display()));
    assert_eq!(parse(&text, "t.xml").unwrap().media.key, want);
    assert_eq!(parse(&text, EMBEDDED_NAME).unwrap().media.key, want);

    std::fs::write(&path, with(r#"<media key-file="missing.key"/>"#)).unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!((e.line(), e.field()), (Some(7), Some("key-file")));
    let missing = dir.path().join("missing.key");
    assert!(e.to_string().contains(&format!("cannot read {}", missing.display())), "{e}");
    std::fs::write(&missing, "short-key\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.field(), Some("key-file"));
    assert!(e.to_string().contains("the key is 9 bytes"), "{e}");
    assert!(!e.to_string().contains("short-key"), "{e}");
    refused(&with(r#"<media key-file=" "/>"#), 7, Some("key-file"), "must not be empty");
}

/// The media key is derived from <auth> wherever <media> stands among
/// <herald>'s children (even before <auth>), and <media> may come
/// anywhere.
#[test]
fn config_media_any_position() {
    let text = edit("  <node number", "  <media max-uploads=\"3\"/>\n  <node number")
        .replace("</herald>", &format!("  {AUTH_HMAC}\n</herald>"));
    let c = parse(&text, "t.xml").unwrap();
    assert_eq!(c.media.max_uploads, 3);
    assert_eq!(c.media.key, MediaConfig::derived_key(&c.auth));
    assert!(c.media.key.is_some());
}

/// required_replicas: 0 means a majority of the voters (1 of 1, 2 of 2,
/// 2 of 3, 3 of 4, 3 of 5); an explicit count is clamped to the voters
/// (2 with 1 voter is 1) and is never below 1 (even with no voters).
#[test]
fn config_media_required_replicas() {
    let majority = MediaConfig::default();
    assert_eq!(majority.replicas, 0);
    for (voters, want) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (0, 1)] {
        assert_eq!(majority.required_replicas(voters), want, "{voters} voters");
    }
    let c = parse(&with(r#"<media replicas="2"/>"#), "t.xml").unwrap();
    assert_eq!(c.media.replicas, 2);
    for (voters, want) in [(1, 1), (2, 2), (3, 2), (5, 2), (0, 1)] {
        assert_eq!(c.media.required_replicas(voters), want, "{voters} voters");
    }
    let all = MediaConfig { replicas: 15, ..MediaConfig::default() };
    assert_eq!((all.required_replicas(3), all.required_replicas(15)), (3, 15));
}

/// Debug output (printed by `heraldd --check`) never shows the media key,
/// given or derived, only that one is set; nor the auth key it came from.
#[test]
fn config_media_debug_redacts_key() {
    let c = parse(&with(r#"<media key="media-secret-secret"/>"#), "t.xml").unwrap();
    for shown in [format!("{c:?}"), format!("{c:#?}"), format!("{:?}", c.media)] {
        assert!(!shown.contains("media-secret"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", c.media.key.as_ref().unwrap())), "{shown}");
        assert!(shown.contains("\"<set>\""), "{shown}");
    }
    let c = parse(&with(r#"<auth mode="hmac" key="auth-secret-secret"/>"#), "t.xml").unwrap();
    let derived = c.media.key.clone().unwrap();
    for shown in [format!("{c:?}"), format!("{c:#?}")] {
        assert!(!shown.contains("auth-secret"), "{shown}");
        assert!(!shown.contains(&format!("{derived:?}")), "{shown}");
        assert!(shown.contains("\"<set>\""), "{shown}");
    }
    let shown = format!("{:?}", base().media);
    assert!(shown.contains("key: None"), "{shown}");
}

// --- raft --------------------------------------------------------------

/// Given <raft> values are read.
#[test]
fn config_raft_values_read() {
    let c = parse(&with(r#"<raft heartbeat-ms="50" election-min-ms="300" election-max-ms="600" snapshot-logs="7" write-timeout-ms="900"/>"#), "t.xml").unwrap();
    assert_eq!(
        c.raft,
        RaftTiming {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_logs: 7,
            write_timeout_ms: 900
        }
    );
}

/// election-min-ms >= election-max-ms is refused, blaming the attribute given.
#[test]
fn config_raft_election_order_refused() {
    refused(
        &with("<raft election-min-ms=\"800\" election-max-ms=\"800\"/>"),
        7,
        Some("election-min-ms"),
        "must be less than election-max-ms (800)",
    );
    refused(&with("<raft election-min-ms=\"900\"/>"), 7, Some("election-min-ms"), "(900)");
    refused(&with("<raft election-max-ms=\"150\"/>"), 7, Some("election-max-ms"), "(150)");
}

/// heartbeat-ms >= election-min-ms is refused.
#[test]
fn config_raft_heartbeat_refused() {
    refused(
        &with("<raft heartbeat-ms=\"200\"/>"),
        7,
        Some("heartbeat-ms"),
        "must be less than election-min-ms (200)",
    );
    refused(
        &with("<raft election-min-ms=\"40\" election-max-ms=\"60\"/>"),
        7,
        Some("election-min-ms"),
        "heartbeat-ms (50)",
    );
}

/// Raft values of 0 or of the wrong type are refused.
#[test]
fn config_raft_type_refused() {
    refused(&with("<raft snapshot-logs=\"0\"/>"), 7, Some("snapshot-logs"), "integer >= 1");
    refused(&with("<raft write-timeout-ms=\"5s\"/>"), 7, Some("write-timeout-ms"), "\"5s\"");
}

// --- limits ------------------------------------------------------------

/// Given <limits> values are read, including the upper caps themselves.
#[test]
fn config_limits_values_read() {
    let c = parse(&with(r#"<limits max-ids-per-query="1000000" max-request-bytes="67108864" max-events-per-request="3" max-connections="4" max-connections-per-ip="2" header-timeout-ms="600000" idle-timeout-ms="3600000" max-response-bytes="268435456"/>"#), "t.xml").unwrap();
    assert_eq!(
        c.limits,
        Limits {
            max_ids_per_query: 1_000_000,
            max_request_bytes: 64 << 20,
            max_events_per_request: 3,
            max_connections: 4,
            max_connections_per_ip: 2,
            header_timeout_ms: 600_000,
            idle_timeout_ms: 3_600_000,
            max_response_bytes: 256 << 20,
        }
    );
}

/// Any limit of 0 is refused.
#[test]
fn config_limits_zero_refused() {
    for field in [
        "max-ids-per-query",
        "max-request-bytes",
        "max-events-per-request",
        "max-connections",
        "max-connections-per-ip",
        "header-timeout-ms",
        "idle-timeout-ms",
        "max-response-bytes",
    ] {
        refused(&with(&format!("<limits {field}=\"0\"/>")), 7, Some(field), "out of range");
    }
}

/// max-request-bytes above 64 MiB, max-ids-per-query above 1,000,000,
/// max-response-bytes above 256 MiB and timeouts outside their bounds are
/// refused, naming the bounds.
#[test]
fn config_limits_caps_refused() {
    refused(
        &with("<limits max-request-bytes=\"67108865\"/>"),
        7,
        Some("max-request-bytes"),
        "from 1 to 67108864",
    );
    refused(
        &with("<limits max-ids-per-query=\"1000001\"/>"),
        7,
        Some("max-ids-per-query"),
        "from 1 to 1000000",
    );
    refused(
        &with("<limits max-response-bytes=\"268435457\"/>"),
        7,
        Some("max-response-bytes"),
        "from 65536 to 268435456",
    );
    refused(
        &with("<limits header-timeout-ms=\"99\"/>"),
        7,
        Some("header-timeout-ms"),
        "from 100 to 600000",
    );
    refused(
        &with("<limits idle-timeout-ms=\"3600001\"/>"),
        7,
        Some("idle-timeout-ms"),
        "from 1000 to 3600000",
    );
}

// --- defaults ----------------------------------------------------------

/// Without <raft> and <limits> the documented defaults apply.
#[test]
fn config_defaults_absent_elements() {
    let c = base();
    assert_eq!(
        c.raft,
        RaftTiming {
            heartbeat_ms: 50,
            election_min_ms: 200,
            election_max_ms: 400,
            snapshot_logs: 20_000,
            write_timeout_ms: 5_000
        }
    );
    assert_eq!(
        c.limits,
        Limits {
            max_ids_per_query: 10_000,
            max_request_bytes: 4_194_304,
            max_events_per_request: 10_000,
            max_connections: 1024,
            max_connections_per_ip: 256,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_response_bytes: 16 << 20,
        }
    );
}

/// Empty <raft/> and <limits/>, or partial ones, default the missing attributes.
#[test]
fn config_defaults_absent_attributes() {
    let c =
        parse(&with("<raft/>").replace("</herald>", "  <limits/>\n</herald>"), "t.xml").unwrap();
    assert_eq!((c.raft, c.limits), (RaftTiming::default(), Limits::default()));
    let c = parse(
        &with("<raft snapshot-logs=\"5\"/>")
            .replace("</herald>", "  <limits max-connections=\"9\"/>\n</herald>"),
        "t.xml",
    )
    .unwrap();
    assert_eq!(c.raft, RaftTiming { snapshot_logs: 5, ..RaftTiming::default() });
    assert_eq!(c.limits, Limits { max_connections: 9, ..Limits::default() });
}

// --- overrides ---------------------------------------------------------

/// Overrides change this node's data dir and ports (and nothing else), and
/// each one is reported.
#[test]
fn config_override_applied_and_reported() {
    let mut c = base();
    let lines = c
        .apply_overrides(&Overrides {
            data_dir: Some("/tmp/x".into()),
            sync_port: Some(45676),
            time_port: Some(45677),
            publish_port: Some(45678),
        })
        .unwrap();
    assert_eq!(
        lines,
        vec![
            "data-dir overridden: ./d -> /tmp/x",
            "sync-port of server 1 overridden: 7101 -> 45676",
            "time-port of server 1 overridden: 7102 -> 45677",
            "publish-port of server 1 overridden: 7103 -> 45678",
        ]
    );
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.this_server().publish_addr(), "127.0.0.1:45678");
    assert_eq!(c.server(2), base().server(2), "other servers untouched");
}

/// Overrides apply to the node's own entry (node 2 here), not server 1.
#[test]
fn config_override_targets_this_node() {
    let mut c = parse(NODE2, "node2.xml").unwrap();
    let lines = c
        .apply_overrides(&Overrides { publish_port: Some(45678), ..Overrides::default() })
        .unwrap();
    assert_eq!(lines, vec!["publish-port of server 2 overridden: 7203 -> 45678"]);
    assert_eq!(c.server(2).unwrap().publish_port, 45678);
    assert_eq!(c.server(1).unwrap().publish_port, 7103);
}

/// No overrides: nothing changes and nothing is reported.
#[test]
fn config_override_none_is_noop() {
    let mut c = base();
    assert!(c.apply_overrides(&Overrides::default()).unwrap().is_empty());
    assert_eq!(c, base());
}

/// A port override that collides with another server (or this server's
/// other port) is refused, naming both, and leaves the config unchanged.
#[test]
fn config_override_collision_refused() {
    let mut c = base();
    let err = c
        .apply_overrides(&Overrides { publish_port: Some(7203), ..Overrides::default() })
        .unwrap_err();
    assert_eq!(
            err.to_string(),
            "t.xml: after overrides: <server number=\"1\"> publish-port: duplicate port 7203 (also used by server 2 publish-port)"
        );
    assert_eq!(err.field(), Some("publish-port"));
    assert_eq!(err.line(), None);
    assert_eq!(c, base(), "unchanged after a refused override");
    let err = c
        .apply_overrides(&Overrides { time_port: Some(7101), ..Overrides::default() })
        .unwrap_err();
    assert!(err.to_string().contains("duplicate port 7101"), "{err}");
}

/// A port override of 0 or an empty data dir is refused.
#[test]
fn config_override_invalid_refused() {
    let mut c = base();
    let err =
        c.apply_overrides(&Overrides { sync_port: Some(0), ..Overrides::default() }).unwrap_err();
    assert_eq!(err.field(), Some("sync-port"));
    let err = c
        .apply_overrides(&Overrides { data_dir: Some(PathBuf::new()), ..Overrides::default() })
        .unwrap_err();
    assert_eq!(err.field(), Some("data-dir"));
    assert_eq!(c, base());
}

// --- load --------------------------------------------------------------

/// load() reads a file and names it as the source.
#[test]
fn config_load_reads_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.xml");
    std::fs::write(&path, NODE3).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.source, path.display().to_string());
    assert_eq!(c.node, 3);
}

/// load() errors name the file: I/O failures and parse failures alike.
#[test]
fn config_load_errors_name_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.xml");
    let err = load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().starts_with(&format!("cannot read {}: ", missing.display())), "{err}");
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, with("<raft heartbeat-ms=\"x\"/>")).unwrap();
    let err = load(&bad).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}:7:", bad.display())), "{err}");
}

// --- the schema itself -------------------------------------------------

/// The schema entry of an element.
fn spec(name: &str) -> &'static ElemSpec {
    SCHEMA.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("<{name}> not in SCHEMA"))
}

/// The default the schema gives an attribute, as written in the XML.
fn schema_default(need: Need) -> Option<String> {
    match need {
        Need::Required => None,
        Need::Optional(default) => default(),
    }
}

/// `<name a="default" ...>` with every attribute of `name` that has a
/// default in the schema, at that default.
fn with_schema_defaults(name: &str) -> String {
    let attrs: String = spec(name)
        .attrs()
        .filter_map(|a| schema_default(a.need).map(|d| format!(" {}=\"{d}\"", a.name)))
        .collect();
    format!("<{name}{attrs}/>")
}

/// Every entry has a doc and every integer entry a reason for its bounds
/// (and min <= max); `<auth>`'s attributes are exactly those its modes
/// allow, in the order the modes list them (the order "unknown attribute"
/// lists them in), and its `mode` choices are the modes.
#[test]
fn config_schema_entries_documented() {
    for el in SCHEMA {
        for attr in el.attrs() {
            assert!(!attr.doc.trim().is_empty(), "<{} {}> has no doc", el.name, attr.name);
            if let Kind::Int { min, max, why } = attr.kind {
                assert!(!why.trim().is_empty(), "<{} {}> has no reason", el.name, attr.name);
                assert!(min <= max, "<{} {}>", el.name, attr.name);
            }
        }
    }
    let mut by_modes: Vec<&str> = Vec::new();
    for name in AUTH_MODES.iter().flat_map(|(_, attrs)| attrs.iter().copied()) {
        if !by_modes.contains(&name) {
            by_modes.push(name);
        }
    }
    assert_eq!(AUTH.attr_names(), by_modes);
    let mode = AUTH.attrs().find(|a| a.name == "mode").unwrap();
    let Kind::Choice(modes) = mode.kind else { panic!("<auth mode> is a choice") };
    assert_eq!(modes.to_vec(), AUTH_MODES.iter().map(|(m, _)| *m).collect::<Vec<_>>());
}

/// Writing out every default the schema states gives the same configuration
/// as leaving the attributes out: the stated defaults are the ones the
/// reader applies, and each is accepted by its own entry.
#[test]
fn config_schema_defaults_are_the_defaults() {
    for name in ["raft", "limits", "time", "master", "gateway", "messages", "media"] {
        let spelled = with_schema_defaults(name);
        let c = parse(&with(&spelled), "t.xml").unwrap_or_else(|e| panic!("{spelled}: {e}"));
        assert_eq!(c, parse(&with(&format!("<{name}/>")), "t.xml").unwrap(), "{spelled}");
        assert_eq!(c, base(), "{spelled}");
    }
    let spelled = with_schema_defaults("edit");
    let c = parse(&with_edit(&spelled), "t.xml").unwrap_or_else(|e| panic!("{spelled}: {e}"));
    assert_eq!(c, parse(&with_edit("<edit/>"), "t.xml").unwrap(), "{spelled}");
    assert!(c.media.edit.enabled, "{spelled}");
    let external = r#"<auth mode="external" url="http://a/""#;
    let timeout = spec("auth").attrs().find(|a| a.name == "timeout-ms").unwrap();
    let d = schema_default(timeout.need).unwrap();
    let c = parse(&with(&format!("{external} timeout-ms=\"{d}\"/>")), "t.xml").unwrap();
    assert_eq!(c, parse(&with(&format!("{external}/>")), "t.xml").unwrap());
    assert!(matches!(c.auth, AuthConfig::External { timeout_ms: DEFAULT_AUTH_TIMEOUT_MS, .. }));
}

// --- schema vs conf/reference.xml --------------------------------------

/// One attribute as conf/reference.xml documents it in its comments.
#[derive(Debug)]
struct DocumentedAttr {
    name: String,
    /// The attribute's line (`name  required  ...`, `name  default X  ...`).
    line: String,
    /// That line and its continuation lines, up to the next attribute or element.
    text: String,
}

/// The elements conf/reference.xml documents in its comments, in order,
/// each with the attributes documented under it. An element's block starts
/// at a line `<name>: ...`; an attribute's entry at a line whose first word
/// is a lowercase name followed by two or more spaces. Lines before the first
/// element of a comment are general notes.
fn reference_docs() -> Vec<(String, Vec<DocumentedAttr>)> {
    let mut docs: Vec<(String, Vec<DocumentedAttr>)> = Vec::new();
    let mut rest = REFERENCE;
    while let Some(start) = rest.find("<!--") {
        let end = rest[start..].find("-->").expect("comment closed") + start;
        // None until the comment's first element line.
        let mut element: Option<&mut Vec<DocumentedAttr>> = None;
        for line in rest[start + 4..end].lines() {
            let t = line.trim_start();
            let header = t.strip_prefix('<').and_then(|t| t.split_once(">:")).map(|(n, _)| n);
            let name_char = |c: char| c.is_ascii_lowercase() || c == '-';
            if let Some(name) = header.filter(|n| !n.is_empty() && n.chars().all(name_char)) {
                docs.push((name.to_string(), Vec::new()));
                element = docs.last_mut().map(|(_, attrs)| attrs);
                continue;
            }
            let Some(attrs) = element.as_deref_mut() else { continue };
            let word = t.find(|c: char| !(c.is_ascii_lowercase() || c == '-')).unwrap_or(0);
            if word > 0 && t[word..].starts_with("  ") {
                let (name, line) = (t[..word].to_string(), t.to_string());
                attrs.push(DocumentedAttr { name, text: line.clone(), line });
            } else if let Some(last) = attrs.last_mut() {
                last.text.push('\n');
                last.text.push_str(t);
            }
        }
        rest = &rest[end + 3..];
    }
    docs
}

/// The value after `default ` on a documented attribute's line, without
/// quotes and trailing punctuation: `default "false".` is `false`.
fn documented_default(line: &str) -> Option<String> {
    let (_, after) = line.split_once("default ")?;
    let word = after.split_whitespace().next()?;
    Some(word.trim_end_matches([',', ':', ';', '.']).trim_matches('"').to_string())
}

/// conf/reference.xml documents exactly the schema's elements, each once,
/// and under each exactly its attributes (no more, none missing, none
/// twice).
#[test]
fn config_reference_documents_exactly_the_schema() {
    let docs = reference_docs();
    let documented: Vec<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = documented.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), documented.len(), "an element documented twice: {documented:?}");
    let mut schema: Vec<&str> = SCHEMA.iter().map(|e| e.name).collect();
    schema.sort_unstable();
    assert_eq!(sorted, schema, "elements documented in reference.xml vs SCHEMA");
    for (element, attrs) in &docs {
        let mut documented: Vec<&str> = attrs.iter().map(|a| a.name.as_str()).collect();
        documented.sort_unstable();
        let mut want = spec(element).attr_names();
        want.sort_unstable();
        assert_eq!(documented, want, "attributes documented under <{element}> vs the schema");
    }
}

/// Every attribute's documentation in conf/reference.xml agrees with its
/// schema entry: "required" exactly for the required ones; "default X" on
/// its line exactly when the schema has a default, and X is it; a bounded
/// integer's upper bound (and a lower bound above 1) are stated.
#[test]
fn config_reference_states_the_schema_defaults_and_bounds() {
    let mut checked = 0;
    for (element, documented) in reference_docs() {
        for attr in spec(&element).attrs() {
            let doc = documented.iter().find(|d| d.name == attr.name).expect("documented");
            let at = format!("<{element} {}>: {:?}", attr.name, doc.line);
            let required = matches!(attr.need, Need::Required);
            assert_eq!(doc.line.contains("required"), required, "required? {at}");
            assert_eq!(documented_default(&doc.line), schema_default(attr.need), "default: {at}");
            if let Kind::Int { min, max, .. } = attr.kind {
                let numbers: Vec<u64> = doc
                    .text
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse().ok())
                    .collect();
                if max != UNBOUNDED {
                    assert!(numbers.contains(&max), "upper bound {max} not stated: {doc:?}");
                }
                if min > 1 {
                    assert!(numbers.contains(&min), "lower bound {min} not stated: {doc:?}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, SCHEMA.iter().map(|e| e.attrs().count()).sum::<usize>());
}

/// conf/reference.xml parses, and its elements spell out every optional
/// attribute that has a default, at that default: all but `<auth
/// timeout-ms>` (not used with the file's mode="hmac") and `<edit enabled>`
/// (shown "false", the same as leaving `<edit>` out, while its default once
/// `<edit>` is given is "true"). `<tls>` and `<peer-tls>` are only shown
/// in a comment (the files they name do not exist).
#[test]
fn config_reference_spells_out_the_defaults() {
    parse(REFERENCE, "reference.xml").unwrap_or_else(|e| panic!("{e}"));
    let ctx = Ctx { file: "reference.xml", text: REFERENCE, base_dir: None };
    let root = ctx.tree().unwrap();
    let mut elements: Vec<&Elem> = vec![&root];
    let mut seen = Vec::new();
    while let Some(el) = elements.pop() {
        elements.extend(el.children.iter());
        seen.push(el.name.as_str());
        for attr in spec(&el.name).attrs() {
            let Some(default) = schema_default(attr.need) else { continue };
            let given = el.attr(attr.name).map(|a| a.value.as_str());
            match (el.name.as_str(), attr.name) {
                ("auth", "timeout-ms") => {
                    let (_, hmac) = AUTH_MODES[0];
                    assert!(!hmac.contains(&attr.name) && given.is_none());
                }
                ("edit", "enabled") => {
                    assert_eq!((default.as_str(), given), ("true", Some("false")));
                }
                _ => assert_eq!(given, Some(default.as_str()), "<{} {}>", el.name, attr.name),
            }
        }
    }
    seen.sort_unstable();
    seen.dedup();
    let commented = ["tls", "peer-tls"];
    let mut want: Vec<&str> =
        SCHEMA.iter().map(|e| e.name).filter(|n| !commented.contains(n)).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "every element but <tls> and <peer-tls> is in reference.xml's XML");
}

// --- <security> --------------------------------------------------------

/// `<security>` is optional and defaults to development (the embedded node
/// runs as it is); `mode="production"` is read; any other mode is refused
/// naming the field and the allowed values.
#[test]
fn config_security_mode() {
    assert_eq!(base().security.mode, SecurityMode::Development);
    let c = parse(&with("<security mode=\"production\"/>"), "t.xml").unwrap();
    assert_eq!(c.security.mode, SecurityMode::Production);
    let c = parse(&with("<security/>"), "t.xml").unwrap();
    assert_eq!(c.security.mode, SecurityMode::Development);
    refused(&with("<security mode=\"strict\"/>"), 7, Some("mode"), "development, production");
}

// --- <access>, <api-key>, token lifetime ---------------------------------

/// A key's `<api-key>` element with the given name, key and scopes.
fn api_key_xml(name: &str, key: &str, scopes: &str) -> String {
    format!(
        "<api-key name=\"{name}\" hash=\"{}\" scopes=\"{scopes}\"/>",
        herald_proto::apikey::hash(key)
    )
}

/// `<access>` is optional (no keys, private metrics); its keys are read
/// with their digest and sorted scopes, and `public-metrics` is read.
#[test]
fn config_access_keys() {
    assert_eq!(base().access, AccessConfig::default());
    let x = format!(
        "<access public-metrics=\"true\">{}{}</access>",
        api_key_xml("pool", "hk_a", "presence:read presence:write"),
        api_key_xml("ops", "hk_b", "admin")
    );
    let c = parse(&with(&x), "t.xml").unwrap();
    assert!(c.access.public_metrics);
    use herald_proto::apikey::{digest, Scope};
    assert_eq!(
        c.access.keys,
        vec![
            ApiKeyConfig {
                name: "pool".into(),
                digest: digest("hk_a"),
                scopes: vec![Scope::PresenceWrite, Scope::PresenceRead],
            },
            ApiKeyConfig { name: "ops".into(), digest: digest("hk_b"), scopes: vec![Scope::Admin] },
        ]
    );
}

/// Bad `<api-key>`s are refused naming the field: unknown scope, no
/// scopes, a malformed hash, a bad or duplicate name, the same key twice.
#[test]
fn config_access_refusals() {
    let one = |k: &str| with(&format!("<access>{k}</access>"));
    refused(&one(&api_key_xml("a", "hk_a", "root")), 7, Some("scopes"), "unknown scope");
    refused(&one(&api_key_xml("a", "hk_a", " ")), 7, Some("scopes"), "must not be empty");
    let bad_hash = "<api-key name=\"a\" hash=\"sha256:00\" scopes=\"admin\"/>";
    refused(&one(bad_hash), 7, Some("hash"), "64 hex");
    refused(&one(&api_key_xml("a/b", "hk_a", "admin")), 7, Some("name"), "letters, digits");
    let two = format!("{}{}", api_key_xml("a", "hk_a", "admin"), api_key_xml("a", "hk_b", "admin"));
    refused(&one(&two), 7, Some("name"), "duplicate");
    let same =
        format!("{}{}", api_key_xml("a", "hk_a", "admin"), api_key_xml("b", "hk_a", "admin"));
    refused(&one(&same), 7, Some("hash"), "twice");
    refused(&with("<access><key/></access>"), 7, Some("<key>"), "unknown element");
}

/// `<auth max-token-lifetime-s>` defaults to 7 days, is read with
/// mode="hmac" within 60..=365 days, and is refused with mode="external".
#[test]
fn config_auth_max_token_lifetime() {
    let hmac =
        |extra: &str| with(&format!("<auth mode=\"hmac\" key=\"0123456789abcdef\"{extra}/>"));
    let lifetime = |c: &Config| match &c.auth {
        AuthConfig::Hmac { max_token_lifetime_s, .. } => *max_token_lifetime_s,
        other => panic!("{other:?}"),
    };
    assert_eq!(lifetime(&parse(&hmac(""), "t.xml").unwrap()), 604_800);
    let c = parse(&hmac(" max-token-lifetime-s=\"3600\""), "t.xml").unwrap();
    assert_eq!(lifetime(&c), 3600);
    refused(&hmac(" max-token-lifetime-s=\"59\""), 7, Some("max-token-lifetime-s"), "60");
    refused(
        &hmac(" max-token-lifetime-s=\"31536001\""),
        7,
        Some("max-token-lifetime-s"),
        "31536000",
    );
    let ext = "<auth mode=\"external\" url=\"http://a/b\" max-token-lifetime-s=\"60\"/>";
    refused(&with(ext), 7, Some("max-token-lifetime-s"), "not used with mode=\"external\"");
}

/// The shipped files hold the development HMAC and API keys (so the
/// embedded node runs as it is, saying so); `<security mode="production">`
/// refuses either, naming the attribute, and accepts other keys.
#[test]
fn config_production_refuses_development_keys() {
    let c = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME).unwrap();
    assert_eq!(c.development_keys().len(), 2, "{:?}", c.development_keys());
    assert!(base().development_keys().is_empty());
    let prod = "<security mode=\"production\"/>";
    let dev_auth = "<auth mode=\"hmac\" key=\"herald-dev-key-change-me-0001\"/>";
    let e = refused(&with(&format!("{dev_auth}{prod}")), 7, Some("key"), "development key");
    assert!(e.to_string().contains("production"), "{e}");
    let dev_api = api_key_xml("d", herald_proto::apikey::DEVELOPMENT_KEY, "admin");
    let x = format!("<access>{dev_api}</access>{prod}");
    refused(&with(&x), 7, Some("hash"), "development key");
    let own = format!(
        "<auth mode=\"hmac\" key=\"0123456789abcdef\"/><access>{}</access>{prod}",
        api_key_xml("mine", "hk_mine", "admin")
    );
    let c = parse(&with(&own), "t.xml").unwrap();
    assert!(c.development_keys().is_empty());
}

// --- <peer-tls> --------------------------------------------------------

/// `<peer-tls>` is optional (absent: plaintext peers); given, its three
/// paths are required and resolved against the config file's directory.
#[test]
fn config_peer_tls_read() {
    assert_eq!(base().peer_tls, None);
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "n1.pem", "n1-key.pem"] {
        std::fs::write(dir.path().join(f), "PEM").unwrap();
    }
    let path = dir.path().join("n.xml");
    std::fs::write(&path, with(r#"<peer-tls ca="ca.pem" cert="n1.pem" key="n1-key.pem"/>"#))
        .unwrap();
    assert_eq!(
        load(&path).unwrap().peer_tls,
        Some(PeerTlsConfig {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("n1.pem"),
            key: dir.path().join("n1-key.pem"),
        })
    );
}

/// A missing `<peer-tls>` file is refused naming the field and the path;
/// each of ca, cert and key is required; an unknown attribute and a second
/// `<peer-tls>` are refused at their line.
#[test]
fn config_peer_tls_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), "PEM").unwrap();
    let path = dir.path().join("n.xml");
    std::fs::write(&path, with(r#"<peer-tls ca="k.pem" cert="nope.pem" key="k.pem"/>"#)).unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!((e.line(), e.field()), (Some(7), Some("cert")));
    let nope = dir.path().join("nope.pem");
    assert!(e.to_string().contains(&format!("cannot read {}", nope.display())), "{e}");
    // Attributes are checked in order (ca, cert, key): the ones before the
    // missing one name a file that exists.
    let k = dir.path().join("k.pem").display().to_string();
    for (line, missing) in [
        (format!(r#"<peer-tls cert="{k}" key="{k}"/>"#), "ca"),
        (format!(r#"<peer-tls ca="{k}" key="{k}"/>"#), "cert"),
        (format!(r#"<peer-tls ca="{k}" cert="{k}"/>"#), "key"),
    ] {
        let e = parse(&with(&line), "t.xml").unwrap_err();
        assert_eq!(e.field(), Some(missing), "{line}: {e}");
        assert!(e.to_string().contains("missing required attribute"), "{line}: {e}");
    }
    refused(&with(r#"<peer-tls colour="red"/>"#), 7, Some("colour"), "unknown attribute");
    let line = r#"<peer-tls ca="a" cert="c" key="k"/>"#;
    let text = with(line).replace("</herald>", &format!("  {line}\n</herald>"));
    refused(&text, 8, Some("<peer-tls>"), "duplicate element (first given at line 7)");
}

// --- <watch> -------------------------------------------------------------

/// `<watch>` is optional (defaults when absent), its values are read, and
/// each bound is refused one step outside at the attribute's line, naming
/// `<watch>`, while the bound itself is accepted.
#[test]
fn config_watch_values_and_bounds() {
    assert_eq!(base().watch, WatchConfig::default());
    let c = parse(&with(r#"<watch window-changes="7" window-ms="1000" progress-ms="100" max-watchers="3" max-ids-per-watcher="2"/>"#), "t.xml").unwrap();
    assert_eq!(
        c.watch,
        WatchConfig {
            window_changes: 7,
            window_ms: 1000,
            progress_ms: 100,
            max_watchers: 3,
            max_ids_per_watcher: 2
        }
    );
    let bounds: &[(&str, u64, u64)] = &[
        ("window-changes", 1, 10_000_000),
        ("window-ms", 1_000, 86_400_000),
        ("progress-ms", 100, 600_000),
        ("max-watchers", 1, 1_000_000),
        ("max-ids-per-watcher", 1, 1_000_000),
    ];
    for &(field, min, max) in bounds {
        let text = |v: u64| with(&format!("<watch {field}=\"{v}\"/>"));
        for ok in [min, max] {
            parse(&text(ok), "t.xml").unwrap_or_else(|e| panic!("{field}={ok}: {e}"));
        }
        for bad in [min - 1, max + 1] {
            let e = refused(&text(bad), 7, Some(field), "");
            assert!(e.to_string().contains("<watch>"), "{e}");
        }
    }
}

/// `<log format>`: "json" is read; the default is "text"; any other value
/// is refused at its line, naming the attribute and the choices.
#[test]
fn config_log_format_read_and_checked() {
    let c = parse(&with("<log format=\"json\"/>"), "t.xml").unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(parse(BASE, "t.xml").unwrap().log.format, LogFormat::Text);
    refused(&with("<log format=\"xml\"/>"), 7, Some("format"), "text, json");
}

// --- <profile-sync>, <module> (issue 17) --------------------------------

/// A `<module>` line with this id and secret attribute(s).
fn module_xml(id: &str, endpoint: &str, secret: &str) -> String {
    format!("<module id=\"{id}\" name=\"N {id}\" endpoint=\"{endpoint}\" {secret}/>")
}

/// `<profile-sync>` at line 7 with its modules on lines 8.. .
fn with_modules(attrs: &str, modules: &[String]) -> String {
    let body: String = modules.iter().map(|m| format!("\n    {m}")).collect();
    with(&format!("<profile-sync{attrs}>{body}\n  </profile-sync>"))
}

/// `<profile-sync>` is optional (no module supported); its modules are
/// read with the decoded secret (inline or from a file, whitespace
/// trimmed), their timeout and the retry policy; `Debug` never shows a
/// secret.
#[test]
fn config_profile_sync_modules() {
    assert_eq!(base().profile_sync, ProfileSyncConfig::default());
    assert!(base().profile_sync.modules.is_empty());
    let secret = herald_proto::webhook::secret_string(&[7u8; 32]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.whsec");
    std::fs::write(&file, format!("{}\n\n", herald_proto::webhook::secret_string(&[9u8; 24])))
        .unwrap();
    let text = with_modules(
        " initial-backoff-ms=\"10\" max-backoff-ms=\"100\" horizon-ms=\"1000\" max-in-flight=\"2\"",
        &[
            module_xml(
                "qq",
                "https://qq.example/hook",
                &format!("secret=\"{secret}\" timeout-ms=\"5\""),
            ),
            module_xml(
                "msn",
                "http://127.0.0.1:9/x",
                &format!("secret-file=\"{}\"", file.display()),
            ),
        ],
    );
    let c = parse(&text, "t.xml").unwrap();
    let p = &c.profile_sync;
    assert_eq!(
        (p.initial_backoff_ms, p.max_backoff_ms, p.horizon_ms, p.max_in_flight),
        (10, 100, 1000, 2)
    );
    assert_eq!(p.modules.len(), 2);
    let qq = p.module("qq").unwrap();
    assert_eq!(
        (qq.name.as_str(), qq.endpoint.as_str(), qq.timeout_ms),
        ("N qq", "https://qq.example/hook", 5)
    );
    assert_eq!(qq.secret, vec![7u8; 32]);
    assert_eq!(p.module("msn").unwrap().secret, vec![9u8; 24]);
    assert_eq!(p.module("msn").unwrap().timeout_ms, 10_000, "the default");
    assert!(p.module("icq").is_none());
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(&secret[6..]) && dbg.contains("<set>"), "{dbg}");
}

/// Bad `<profile-sync>` / `<module>` are refused naming the field and the
/// line: a duplicate id, an endpoint that is not http(s), no secret, both
/// secret and secret-file, a secret not in whsec_ form or of the wrong
/// size, an initial backoff above the maximum, an unknown attribute.
#[test]
fn config_profile_sync_refusals() {
    let s =
        |n: usize| format!("secret=\"{}\"", herald_proto::webhook::secret_string(&vec![1u8; n]));
    let ok = module_xml("qq", "http://h:1/x", &s(32));
    let one = |m: String| with_modules("", &[m]);
    refused(&with_modules("", &[ok.clone(), ok.clone()]), 9, Some("id"), "duplicate module id");
    refused(&one(module_xml("qq", "ftp://h/x", &s(32))), 8, Some("endpoint"), "http://");
    refused(&one(module_xml("qq", "http:///x", &s(32))), 8, Some("endpoint"), "http://");
    refused(&one(module_xml("qq", "http://h/x", "")), 8, Some("secret"), "secret or secret-file");
    let both = format!("{} secret-file=\"f\"", s(32));
    refused(&one(module_xml("qq", "http://h/x", &both)), 8, Some("secret-file"), "not both");
    refused(&one(module_xml("qq", "http://h/x", "secret=\"abc\"")), 8, Some("secret"), "whsec_");
    refused(&one(module_xml("qq", "http://h/x", &s(16))), 8, Some("secret"), "24 to 64");
    refused(&one(module_xml("qq", "http://h/x", &s(65))), 8, Some("secret"), "24 to 64");
    refused(
        &with_modules(
            " initial-backoff-ms=\"2000\" max-backoff-ms=\"1000\"",
            std::slice::from_ref(&ok),
        ),
        7,
        Some("initial-backoff-ms"),
        "max-backoff-ms",
    );
    refused(
        &one(ok.replace("<module", "<module colour=\"red\"")),
        8,
        Some("colour"),
        "unknown attribute",
    );
    refused(&one(ok.replace("id=\"qq\"", "id=\"q q\"")), 8, Some("id"), "whitespace");
}

// --- zones (issue 16) ----------------------------------------------------

/// Each zones-3dc file is node N of the same five servers: voters 1–3 in
/// dc1–dc3, replicas 4 and 5 in dc4 and dc5, zone survival asked for and
/// met, `<reads>` as the file says.
#[test]
fn config_shipped_zones_3dc() {
    for (i, text) in ZONES.iter().enumerate() {
        let c = parse(text, "zones.xml").unwrap();
        assert_eq!(c.node, i as u64 + 1);
        assert!(c.zone_survival);
        let layout: Vec<(u64, &str, ServerRole)> =
            c.servers.iter().map(|s| (s.number, s.zone.as_str(), s.role)).collect();
        assert_eq!(
            layout,
            vec![
                (1, "dc1", ServerRole::Voter),
                (2, "dc2", ServerRole::Voter),
                (3, "dc3", ServerRole::Voter),
                (4, "dc4", ServerRole::Replica),
                (5, "dc5", ServerRole::Replica),
            ]
        );
        assert_eq!(c.reads.max_staleness_ms, 1000);
        assert_eq!(c.reads.when_stale, WhenStale::Forward);
    }
}

/// Zone and role default to "default" and voter; `sync-via` is only a dial
/// address; a bad role is refused naming the field.
#[test]
fn config_server_zone_role_and_sync_via() {
    let c = base();
    assert!(c.servers.iter().all(|s| s.zone == DEFAULT_ZONE && s.role == ServerRole::Voter));
    assert!(!c.zone_survival);
    let c = parse(
        &edit(
            r#"<server number="2" host="127.0.0.1""#,
            r#"<server number="2" host="127.0.0.1" zone="dc2" role="replica" sync-via="127.0.0.1:9999""#,
        ),
        "t.xml",
    )
    .unwrap();
    let s = c.server(2).unwrap();
    assert_eq!((s.zone.as_str(), s.role), ("dc2", ServerRole::Replica));
    assert_eq!(s.dial_sync_addr(), "127.0.0.1:9999");
    assert_eq!(s.sync_addr(), "127.0.0.1:7201");
    refused(
        &edit(
            r#"<server number="2" host="127.0.0.1""#,
            r#"<server number="2" host="127.0.0.1" role="boss""#,
        ),
        5,
        Some("role"),
        "voter, replica",
    );
}

/// Without a voter the list is refused; with zone-survival, voters that
/// cannot form a majority with one zone lost are refused at
/// `<servers zone-survival>` (file, line, field), three zones of one voter
/// each pass, and without zone-survival the same two-zone layout passes.
#[test]
fn config_zone_survival() {
    let two_replicas = edit(
        r#"<server number="1" host="127.0.0.1""#,
        r#"<server number="1" host="127.0.0.1" role="replica""#,
    )
    .replacen(
        r#"<server number="2" host="127.0.0.1""#,
        r#"<server number="2" host="127.0.0.1" role="replica""#,
        1,
    );
    refused(&two_replicas, 3, Some("server"), "at least one <server> must be a voter");

    let three = |zones: [&str; 3], survival: bool| {
        format!(
            r#"<herald cluster="c">
  <node number="1" data-dir="./d"/>
  <servers zone-survival="{survival}">
    <server number="1" host="127.0.0.1" sync-port="7101" time-port="7102" publish-port="7103" zone="{}"/>
    <server number="2" host="127.0.0.1" sync-port="7201" time-port="7202" publish-port="7203" zone="{}"/>
    <server number="3" host="127.0.0.1" sync-port="7301" time-port="7302" publish-port="7303" zone="{}"/>
    <server number="4" host="127.0.0.1" sync-port="7401" time-port="7402" publish-port="7403" zone="far" role="replica"/>
  </servers>
</herald>
"#,
            zones[0], zones[1], zones[2]
        )
    };
    let err = refused(&three(["a", "a", "b"], true), 3, Some("zone-survival"), "losing zone \"a\"");
    assert!(err.to_string().contains("a: 2, b: 1"), "{err}");
    assert!(parse(&three(["a", "a", "b"], false), "t.xml").is_ok());
    let ok = parse(&three(["a", "b", "c"], true), "t.xml").unwrap();
    assert!(ok.zone_survival);
}

/// `<reads>` defaults, and its bounds are enforced.
#[test]
fn config_reads() {
    let r = base().reads;
    assert_eq!(
        (r.max_staleness_ms, r.tick_ms, r.stale_wait_ms, r.when_stale, r.min_revision_wait_ms),
        (1000, 100, 200, WhenStale::Forward, 2000)
    );
    let c =
        parse(&with(r#"<reads max-staleness-ms="50" when-stale="fail" tick-ms="20"/>"#), "t.xml")
            .unwrap();
    assert_eq!(
        (c.reads.max_staleness_ms, c.reads.when_stale, c.reads.tick_ms),
        (50, WhenStale::Fail, 20)
    );
    refused(&with(r#"<reads max-staleness-ms="0"/>"#), 7, Some("max-staleness-ms"), "0");
    refused(&with(r#"<reads tick-ms="5"/>"#), 7, Some("tick-ms"), "5");
    refused(&with(r#"<reads when-stale="maybe"/>"#), 7, Some("when-stale"), "fail, forward");
}

/// `<module ca>`: a PEM file of CA certificates is read (each one a DER
/// certificate kept for the dispatcher; none: the public roots); a file
/// with no certificate, a missing file or one over the size bound is
/// refused naming `ca` and the line.
#[test]
fn config_profile_sync_module_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = p.self_signed(&key).unwrap();
    let two = dir.path().join("two.pem");
    std::fs::write(&two, format!("{}{}", ca.pem(), ca.pem())).unwrap();
    let s = format!("secret=\"{}\"", herald_proto::webhook::secret_string(&[1u8; 32]));
    let m = |ca: &str| module_xml("qq", "https://h:1/x", &format!("{s} {ca}"));
    let c = parse(&with_modules("", &[m(&format!("ca=\"{}\"", two.display()))]), "t.xml").unwrap();
    let qq = c.profile_sync.module("qq").unwrap();
    assert_eq!(qq.ca, vec![ca.der().to_vec(), ca.der().to_vec()]);
    let c = parse(&with_modules("", &[m("")]), "t.xml").unwrap();
    assert!(c.profile_sync.module("qq").unwrap().ca.is_empty(), "default: public roots");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    refused(
        &with_modules("", &[m(&format!("ca=\"{}\"", junk.display()))]),
        8,
        Some("ca"),
        "no PEM certificate",
    );
    refused(&with_modules("", &[m("ca=\"/nonexistent/ca.pem\"")]), 8, Some("ca"), "cannot read");
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'x'; MAX_MODULE_CA_BYTES as usize + 1]).unwrap();
    refused(
        &with_modules("", &[m(&format!("ca=\"{}\"", big.display()))]),
        8,
        Some("ca"),
        "over 1048576 bytes",
    );
}
