//! Config parsing and validation: defaults, paths, overrides, per-node values, errors.

use super::*;

const GOOD: &str = r#"
node_id = 1
listen = "127.0.0.1:7400"
data_dir = "data"
trust_domain = "gov.example"
bootstrap = true
[tls]
ca = "pki/ca.crt"
cert = "pki/nodes/a.crt"
key = "/abs/a.key"
[policy]
model = "model.conf"
rules = "policy.csv"
[checkpoint]
signing_key = "pki/nodes/a.note.key"
"#;

fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(text, Path::new("/etc/q"), Path::new("/etc/q/node.toml"))
}

#[test]
fn resolves_paths_and_applies_defaults() {
    let c = parse(GOOD).expect("parses");
    assert_eq!(c.data_dir, Path::new("/etc/q/data"));
    assert_eq!(c.tls.key, Path::new("/abs/a.key"));
    assert_eq!(c.advertise, "https://127.0.0.1:7400");
    assert_eq!(c.limits.max_payload_bytes, DEFAULT_MAX_PAYLOAD_BYTES);
    assert!(c.bootstrap);
    assert_eq!(c.checkpoint.origin, "gov.example/qianlian");
    assert_eq!(
        c.checkpoint.signing_key,
        Path::new("/etc/q/pki/nodes/a.note.key")
    );
    assert_eq!(c.raft.commit_timeout, std::time::Duration::from_secs(10));
}

#[test]
fn edge_limits_have_their_documented_defaults_and_a_raft_listener_is_what_peers_are_told() {
    let c = parse(GOOD).expect("parses");
    let l = c.limits;
    assert_eq!(l.max_connections, 8192);
    assert_eq!(l.max_connections_per_source, 1024);
    assert_eq!(l.max_streams_per_connection, 128);
    assert_eq!(l.request_timeout, std::time::Duration::from_secs(30));
    assert_eq!(l.keepalive_interval, std::time::Duration::from_secs(30));
    assert_eq!(l.keepalive_timeout, std::time::Duration::from_secs(10));
    assert_eq!(l.max_connection_age, std::time::Duration::from_secs(1800));
    assert_eq!(l.anonymous_calls_per_second, 100);
    assert_eq!(l.anonymous_burst, 200);
    assert_eq!(c.raft.listen, None);

    let c = parse(&format!("{GOOD}[raft]\nlisten = \"10.0.0.7:7401\"\n")).expect("parses");
    assert_eq!(c.raft.listen, Some("10.0.0.7:7401".parse().expect("addr")));
    assert_eq!(c.advertise, "https://10.0.0.7:7401");
    // An explicit advertise wins: a name or a port mapped in front of the listener.
    let c = parse(&format!(
        "advertise = \"https://raft.a.gov.example:7401\"\n{GOOD}[raft]\nlisten = \"10.0.0.7:7401\"\n"
    ))
    .expect("parses");
    assert_eq!(c.advertise, "https://raft.a.gov.example:7401");
}

#[test]
fn environment_overrides_keys_and_refuses_unknown_names() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let c = NodeConfig::parse_with_env(
        GOOD,
        Path::new("/etc/q"),
        Path::new("/etc/q/node.toml"),
        &env(&[
            ("QIANLIAN_LISTEN", "127.0.0.1:9000"),
            ("QIANLIAN_NODE_ID", "7"),
            ("QIANLIAN_RAFT_COMMIT_TIMEOUT_MS", "2500"),
            ("QIANLIAN_TLS_CERT", "other.crt"),
            ("QIANLIAN_DEV_DIR", "ignored"),
            ("PATH", "/bin"),
        ]),
    )
    .expect("overrides apply");
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.node_id, 7);
    assert_eq!(
        c.raft.commit_timeout,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(c.tls.cert, Path::new("/etc/q/other.crt"));
    let err = NodeConfig::parse_with_env(
        GOOD,
        Path::new("/etc/q"),
        Path::new("/etc/q/node.toml"),
        &env(&[("QIANLIAN_LISTN", "x")]),
    )
    .expect_err("typo");
    assert!(
        err.to_string()
            .contains("QIANLIAN_LISTN names no config key"),
        "{err}"
    );
    let err = NodeConfig::parse_with_env(
        GOOD,
        Path::new("/etc/q"),
        Path::new("/etc/q/node.toml"),
        &env(&[("QIANLIAN_NODE_ID", "0")]),
    )
    .expect_err("validated like the file");
    assert!(err.to_string().contains("key `node_id`"), "{err}");
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (GOOD.replace("node_id = 1", "node_id = 0"), "key `node_id`"),
        (GOOD.replace("127.0.0.1:7400", "localhost"), "key `listen`"),
        (
            format!("{GOOD}[limits]\nmax_payload_bytes = 0\n"),
            "key `limits.max_payload_bytes`",
        ),
        (GOOD.replace("bootstrap", "bootstrapp"), "bootstrapp"),
        (GOOD.replace("[policy]", "[polcy]"), "polcy"),
        (
            format!("{GOOD}[raft]\ncommit_timeout_ms = 5\n"),
            "key `raft.commit_timeout_ms`",
        ),
        (
            GOOD.replace("[checkpoint]", "[checkpoint]\norigin = \"a b\""),
            "key `checkpoint.origin`",
        ),
        (
            format!("{GOOD}[metrics]\nlisten = \"localhost\"\n"),
            "key `metrics.listen`",
        ),
        (
            format!("{GOOD}[limits]\nmax_streams_per_connection = 0\n"),
            "key `limits.max_streams_per_connection`",
        ),
        (
            format!("{GOOD}[limits]\nmax_connections = 10\nmax_connections_per_source = 11\n"),
            "key `limits.max_connections_per_source`",
        ),
        (
            format!("{GOOD}[raft]\nlisten = \"nowhere\"\n"),
            "key `raft.listen`",
        ),
        (
            format!("{GOOD}[raft]\nlisten = \"127.0.0.1:7400\"\n"),
            "key `raft.listen`",
        ),
    ];
    for (text, needle) in cases {
        let err = parse(&text).expect_err(needle).to_string();
        assert!(err.starts_with("config /etc/q/node.toml"), "{err}");
        assert!(err.contains(needle), "{err} should name {needle}");
    }
}

/// The shape of `deploy/k8s/config/node.toml`: one file for every pod of the StatefulSet.
const STATEFUL: &str = r#"
node_id = "ordinal"
listen = "0.0.0.0:7400"
advertise = "https://{hostname}.qianlian-peers:7400"
data_dir = "/data"
trust_domain = "gov.example"
[tls]
ca = "/pki/ca.crt"
cert = "/pki/node-{node_id}.crt"
key = "/pki/node-{node_id}.key"
[policy]
model = "/config/model.conf"
rules = "/config/policy.csv"
[checkpoint]
signing_key = "/pki/node-{node_id}.note.key"
[licenses]
signing_keys = ["/pki/node-{node_id}.license.key"]
trust_node_keys = ["/pki/node-1.note.pub", "/pki/node-2.note.pub"]
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn parse_env(text: &str, pairs: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse_with_env(
        text,
        Path::new("/etc/q"),
        Path::new("/etc/q/node.toml"),
        &env(pairs),
    )
}

#[test]
fn ordinal_node_id_comes_from_the_pod_name_and_selects_per_node_files() {
    let c = parse_env(STATEFUL, &[("HOSTNAME", "qianlian-2")]).expect("pod 2");
    assert_eq!(c.node_id, 3);
    assert_eq!(c.advertise, "https://qianlian-2.qianlian-peers:7400");
    assert_eq!(c.tls.cert, Path::new("/pki/node-3.crt"));
    assert_eq!(c.tls.key, Path::new("/pki/node-3.key"));
    assert_eq!(c.checkpoint.signing_key, Path::new("/pki/node-3.note.key"));
    assert_eq!(
        c.licenses.signing_keys,
        [PathBuf::from("/pki/node-3.license.key")]
    );
    // Other paths are left alone.
    assert_eq!(
        c.licenses.trust_node_keys,
        [
            PathBuf::from("/pki/node-1.note.pub"),
            PathBuf::from("/pki/node-2.note.pub")
        ]
    );
    let c = parse_env(STATEFUL, &[("HOSTNAME", "gw-dept-a-0")]).expect("pod 0");
    assert_eq!(c.node_id, 1);
    // The environment can ask for it too, and the file's number then gives way.
    let c = parse_env(
        &GOOD.replace("cert = \"pki/nodes/a.crt\"", "cert = \"n{ordinal}.crt\""),
        &[("HOSTNAME", "qianlian-4"), ("QIANLIAN_NODE_ID", "ordinal")],
    )
    .expect("env override");
    assert_eq!(c.node_id, 5);
    assert_eq!(c.tls.cert, Path::new("/etc/q/n4.crt"));
    // A number with placeholders: {node_id} works without a pod name.
    let c = parse(&GOOD.replace("pki/nodes/a.crt", "pki/node-{node_id}.crt")).expect("number");
    assert_eq!(c.tls.cert, Path::new("/etc/q/pki/node-1.crt"));
}

#[test]
fn ordinal_errors_name_the_key_and_the_fix() {
    // (config, environment, key named, fix named)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 7] = [
        (STATEFUL, &[], "key `node_id`", "HOSTNAME is not set"),
        (
            STATEFUL,
            &[("HOSTNAME", "gateway")],
            "key `node_id`",
            "host name is `gateway`",
        ),
        (
            STATEFUL,
            &[("HOSTNAME", "qianlian-x1")],
            "key `node_id`",
            "trailing -<number>",
        ),
        (
            STATEFUL,
            &[("HOSTNAME", "qianlian-")],
            "key `node_id`",
            "give node_id as a number",
        ),
        (
            &STATEFUL.replace("\"ordinal\"", "\"first\""),
            &[("HOSTNAME", "qianlian-0")],
            "key `node_id`",
            "neither a number nor \"ordinal\"",
        ),
        (
            &GOOD.replace("pki/nodes/a.crt", "n{ordinal}.crt"),
            &[("HOSTNAME", "qianlian-0")],
            "key `tls.cert`",
            "use {node_id}",
        ),
        (
            &GOOD.replace(
                "bootstrap = true",
                "bootstrap = true\nadvertise = \"https://{hostname}:7400\"",
            ),
            &[],
            "key `advertise`",
            "HOSTNAME is not set",
        ),
    ];
    for (text, vars, key, fix) in cases {
        let err = parse_env(text, vars).expect_err(fix).to_string();
        assert!(err.contains(key), "{err} should name {key}");
        assert!(err.contains(fix), "{err} should say {fix}");
    }
}

#[test]
fn the_example_config_parses_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.toml");
    let text = std::fs::read_to_string(&path).expect("deploy/config.example.toml");
    NodeConfig::parse(&text, Path::new("/etc/qianlian"), &path).expect("the example is valid");
    // Every key, set or commented out, appears as `key =` under its table.
    for key in ENV_KEYS {
        let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        let section = if table.is_empty() {
            text.split("\n[").next().unwrap_or_default().to_owned()
        } else {
            text.split(&format!("\n[{table}]\n"))
                .nth(1)
                .map(|s| s.split("\n[").next().unwrap_or_default().to_owned())
                .unwrap_or_default()
        };
        let documented = section
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .any(|l| l.starts_with(&format!("{leaf} =")));
        assert!(
            documented,
            "config key `{key}` is not documented in {}",
            path.display()
        );
    }
}

#[test]
fn gateway_keys_go_together_and_adapters_need_http_urls() {
    let with = |extra: &str| parse(&format!("{GOOD}{extra}"));
    let c = with("[gateway]\ndepartment = \"housing\"\nclient_cert = \"c.crt\"\nclient_key = \"c.key\"\n[[gateway.adapter]]\ndataset = \"construction-permit\"\nurl = \"http://10.0.0.9:8080/permits/\"\n")
        .expect("valid");
    assert_eq!(c.gateway.department.as_deref(), Some("housing"));
    assert_eq!(c.gateway.forward_timeout, std::time::Duration::from_secs(5));
    assert_eq!(c.gateway.adapters[0].url, "http://10.0.0.9:8080/permits");
    for (extra, key) in [
        (
            "[gateway]\ndepartment = \"housing\"\n",
            "gateway.client_cert",
        ),
        (
            "[gateway]\ndepartment = \"Housing\"\nclient_cert = \"c\"\nclient_key = \"k\"\n",
            "gateway.department",
        ),
        (
            "[gateway]\nforward_timeout_ms = 5\n",
            "gateway.forward_timeout_ms",
        ),
        (
            "[[gateway.adapter]]\ndataset = \"d\"\nurl = \"ftp://x\"\n",
            "gateway.adapter.url",
        ),
    ] {
        let err = with(extra).expect_err(extra).to_string();
        assert!(err.contains(&format!("key `{key}`")), "{err}");
    }
}

#[test]
fn audit_token_keys_need_an_issuer_and_an_audience() {
    let c = parse(GOOD).expect("parses");
    assert!(c.audit.token_keys.is_empty());
    assert_eq!(c.audit.token_subject_claim, "sub");
    let full = format!(
        "{GOOD}[audit]\ntoken_issuer = \"https://id.gov.example\"\ntoken_audience = \"qianlian\"\ntoken_keys = [\"idp.pem\"]\ntoken_subject_claim = \"id_number\"\n"
    );
    let c = parse(&full).expect("parses");
    assert_eq!(c.audit.token_keys, vec![PathBuf::from("/etc/q/idp.pem")]);
    assert_eq!(c.audit.token_subject_claim, "id_number");
    let e = parse(&format!("{GOOD}[audit]\ntoken_keys = [\"idp.pem\"]\n"))
        .expect_err("no issuer")
        .to_string();
    assert!(e.contains("audit.token_issuer"), "{e}");
    let e = parse_env(GOOD, &[("QIANLIAN_AUDIT_TOKEN_KEYS", "[\"idp.pem\"]")])
        .expect_err("no issuer")
        .to_string();
    assert!(e.contains("token_audience"), "{e}");
}

#[test]
fn backends_over_https_name_their_ca_and_reflection_can_be_turned_off() {
    let adapter = |url: &str, ca: &str| {
        format!(
            "{GOOD}[gateway]\n[[gateway.adapter]]\ndataset = \"permits\"\nurl = \"{url}\"\n{ca}"
        )
    };
    let c = parse(&adapter(
        "https://backend.internal:8443/permits/",
        "ca = \"pki/backend-ca.crt\"\n",
    ))
    .expect("https with a CA");
    let a = &c.gateway.adapters[0];
    assert_eq!(a.url, "https://backend.internal:8443/permits");
    assert_eq!(
        a.ca.as_deref(),
        Some(Path::new("/etc/q/pki/backend-ca.crt"))
    );
    assert_eq!(
        parse(&adapter("http://10.0.0.9/p", ""))
            .expect("http")
            .gateway
            .adapters[0]
            .ca,
        None
    );
    for (text, fix) in [
        (adapter("https://backend.internal/p", ""), "set `ca`"),
        (
            adapter("http://10.0.0.9/p", "ca = \"ca.crt\"\n"),
            "remove `ca`",
        ),
        (adapter("ftp://10.0.0.9/p", ""), "http:// or https://"),
    ] {
        let err = parse(&text).expect_err(fix).to_string();
        assert!(err.contains("gateway.adapter"), "{err}");
        assert!(err.contains(fix), "{err} should say {fix}");
    }
    assert!(parse(GOOD).expect("default").grpc_reflection);
    let off = GOOD.replace(
        "bootstrap = true",
        "bootstrap = true\ngrpc_reflection = false",
    );
    assert!(!parse(&off).expect("off").grpc_reflection);
}
