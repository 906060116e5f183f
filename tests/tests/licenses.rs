//! E-licenses through the real binary and network: issue, verify online and offline, tamper,
//! forge, expire, suspend, revoke, QR, watch, HTTP/JSON.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::cluster::Cluster;
use support::*;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `qianlian license <args>` against `endpoint`, as `who` (None: no client certificate).
fn license(pki: &Path, endpoint: &str, who: Option<&str>, args: &[&str]) -> Output {
    let ca = pki.join("ca.crt").display().to_string();
    let mut all: Vec<String> = vec![
        "license".into(),
        "--ca".into(),
        ca,
        "--endpoint".into(),
        endpoint.into(),
    ];
    if let Some(w) = who {
        all.push("--cert".into());
        all.push(pki.join(format!("clients/{w}.crt")).display().to_string());
        all.push("--key".into());
        all.push(pki.join(format!("clients/{w}.key")).display().to_string());
    }
    all.extend(args.iter().map(|s| s.to_string()));
    cli(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Issue a business license; returns (bundle path, license hash hex).
fn issue(
    pki: &Path,
    endpoint: &str,
    dir: &Path,
    name: &str,
    holder: &str,
    from: i64,
    until: i64,
) -> (PathBuf, String) {
    let out_path = dir.join(format!("{name}.json"));
    let (f, u) = (from.to_string(), until.to_string());
    let number = format!("GZ-{name}-0001");
    let out = license(
        pki,
        endpoint,
        Some("market-regulation"),
        &[
            "issue",
            "--type",
            "business-license",
            "--number",
            &number,
            "--holder-name",
            "贵州黔云数据科技有限公司",
            "--holder-id",
            holder,
            "--valid-from",
            &f,
            "--valid-until",
            &u,
            "--field",
            "legal_representative=张伟",
            "--field",
            "registered_capital=1000万元",
            "--out",
            &out_path.display().to_string(),
        ],
    );
    assert!(out.status.success(), "issue: {}", stderr(&out));
    let text = stdout(&out);
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("issued license "))
        .expect("license hash printed")
        .to_owned();
    (out_path, hash)
}

fn verdict(out: &Output) -> String {
    stdout(out)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

fn flip_license_byte(bundle: &Path, pos: usize, out: &Path) {
    use base64::Engine as _;
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle).expect("bundle")).expect("json");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64
        .decode(json["license"].as_str().expect("license"))
        .expect("base64");
    let i = pos % bytes.len();
    bytes[i] ^= 0x01;
    json["license"] = serde_json::Value::String(b64.encode(bytes));
    std::fs::write(out, json.to_string()).expect("write");
}

#[tokio::test]
async fn a_license_lives_its_whole_life_on_the_record() {
    let env = Env::new();
    let node = env.start();
    let pki = env.pki();
    let ep = node.endpoint();
    let dir = env.path();
    let t = now();
    let holder = uscc(21);
    let (bundle, hash) = issue(&pki, &ep, dir, "good", &holder, 0, t + 365 * 86_400);

    // Online (public, no client certificate) and offline: genuine.
    let out = license(&pki, &ep, None, &["verify", &bundle.display().to_string()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(verdict(&out), "genuine");
    let trust1 = dir.join("trust1.json");
    let out = license(
        &pki,
        &ep,
        None,
        &["trust-bundle", "--out", &trust1.display().to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let offline = |b: &Path, trust: &Path| {
        cli(&[
            "license",
            "verify",
            &b.display().to_string(),
            "--offline",
            "--trust-bundle",
            &trust.display().to_string(),
        ])
    };
    let out = offline(&bundle, &trust1);
    assert_eq!(verdict(&out), "genuine", "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("s old (status list)"),
        "offline says how fresh it is"
    );

    // One flipped byte anywhere in the license: tampered, online and offline.
    let len = {
        use base64::Engine as _;
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&bundle).expect("b")).expect("j");
        base64::engine::general_purpose::STANDARD
            .decode(json["license"].as_str().expect("l"))
            .expect("b64")
            .len()
    };
    for pos in [0, 7, len / 3, len / 2, len - 40, len - 1] {
        let bad = dir.join(format!("bad-{pos}.json"));
        flip_license_byte(&bundle, pos, &bad);
        let out = license(&pki, &ep, None, &["verify", &bad.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "a non-genuine verdict exits 2");
        assert_eq!(verdict(&out), "tampered", "byte {pos}: {}", stdout(&out));
        assert_eq!(
            verdict(&offline(&bad, &trust1)),
            "tampered",
            "offline, byte {pos}"
        );
    }

    // A department without the issue rule is refused at issuance.
    let out = license(
        &pki,
        &ep,
        Some("housing"),
        &[
            "issue",
            "--type",
            "business-license",
            "--number",
            "X1",
            "--holder-name",
            "某公司",
            "--holder-id",
            &holder,
            "--out",
            &dir.join("x.json").display().to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no rule letting housing issue business-license"),
        "{}",
        stderr(&out)
    );

    // A business license forged outside the system with housing's real key: not authorised.
    let forged = {
        use qianlian_verifier::license::{LicenseClaims, LicenseType, sign_license, to_qr_payload};
        let key = qianlian_gateway::node::pki::read_license_key(
            &pki.join("departments/housing.license.key"),
        )
        .expect("key");
        let claims = LicenseClaims {
            license_type: LicenseType::BusinessLicense,
            number: "FORGED-1".into(),
            holder_name: "伪造公司".into(),
            holder_id: uscc(22),
            department: "housing".into(),
            issuer_key_id: qianlian_gateway::node::pki::license_key_id(
                "housing",
                &key.verifying_key(),
            ),
            issued_at: t,
            valid_from: t,
            valid_until: Some(t + 86_400),
            fields: Default::default(),
        };
        to_qr_payload(&sign_license(&claims, &key).expect("sign"))
    };
    let out = license(&pki, &ep, None, &["verify", "--qr", &forged]);
    assert_eq!(verdict(&out), "issuer-not-authorised", "{}", stdout(&out));
    let out = cli(&[
        "license",
        "verify",
        "--qr",
        &forged,
        "--offline",
        "--trust-bundle",
        &trust1.display().to_string(),
    ]);
    assert_eq!(verdict(&out), "issuer-not-authorised", "{}", stdout(&out));

    // Expired and not yet valid.
    let (old, _) = issue(
        &pki,
        &ep,
        dir,
        "old",
        &uscc(23),
        t - 10 * 86_400,
        t - 86_400,
    );
    assert_eq!(
        verdict(&license(
            &pki,
            &ep,
            None,
            &["verify", &old.display().to_string()]
        )),
        "expired"
    );
    let (future, _) = issue(
        &pki,
        &ep,
        dir,
        "future",
        &uscc(24),
        t + 86_400,
        t + 10 * 86_400,
    );
    assert_eq!(
        verdict(&license(
            &pki,
            &ep,
            None,
            &["verify", &future.display().to_string()]
        )),
        "not-yet-valid"
    );

    // Suspend, reinstate, revoke; only the issuer may.
    let out = license(
        &pki,
        &ep,
        Some("housing"),
        &["suspend", &hash, "--reason", "inspection"],
    );
    assert!(
        stderr(&out).contains("only the issuer `market-regulation`"),
        "{}",
        stderr(&out)
    );
    let out = license(
        &pki,
        &ep,
        Some("market-regulation"),
        &["suspend", &hash, "--reason", "inspection"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        verdict(&license(
            &pki,
            &ep,
            None,
            &["verify", &bundle.display().to_string()]
        )),
        "suspended"
    );
    let out = license(
        &pki,
        &ep,
        Some("market-regulation"),
        &["reinstate", &hash, "--reason", "inspection-passed"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        verdict(&license(
            &pki,
            &ep,
            None,
            &["verify", &bundle.display().to_string()]
        )),
        "genuine"
    );
    let out = license(
        &pki,
        &ep,
        Some("market-regulation"),
        &["revoke", &hash, "--reason", "business-closed"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        verdict(&license(
            &pki,
            &ep,
            None,
            &["verify", &bundle.display().to_string()]
        )),
        "revoked"
    );
    let out = license(
        &pki,
        &ep,
        Some("market-regulation"),
        &["reinstate", &hash, "--reason", "x"],
    );
    assert!(
        stderr(&out).contains("revocation is final"),
        "{}",
        stderr(&out)
    );

    // The old trust bundle does not know yet, and says how old it is; a fresh one does.
    let out = offline(&bundle, &trust1);
    assert_eq!(
        verdict(&out),
        "genuine",
        "an old bundle cannot see the revocation"
    );
    let trust2 = dir.join("trust2.json");
    assert!(
        license(
            &pki,
            &ep,
            None,
            &["trust-bundle", "--out", &trust2.display().to_string()]
        )
        .status
        .success()
    );
    assert_eq!(verdict(&offline(&bundle, &trust2)), "revoked");

    // The issuing department watches every license issued in the holder's name (the holder's
    // own view, with a token, is in public_calls.rs).
    let out = license(
        &pki,
        &ep,
        Some("market-regulation"),
        &["watch", "--holder", &holder],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("4 record(s)"),
        "issued, suspended, reinstated, revoked: {text}"
    );
    assert!(
        !text.contains(&holder),
        "the log never holds the holder id in clear"
    );

    // QR code as PNG and SVG; a typical business license fits version 25 or smaller.
    let png = dir.join("license.png");
    let svg = dir.join("license.svg");
    let out = license(
        &pki,
        &ep,
        None,
        &[
            "qr",
            &bundle.display().to_string(),
            "--png",
            &png.display().to_string(),
            "--svg",
            &svg.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        &std::fs::read(&png).expect("png")[..8],
        b"\x89PNG\r\n\x1a\n"
    );
    assert!(std::fs::read_to_string(&svg).expect("svg").contains("<svg"));
    let version: u32 = stdout(&out)
        .split("QR version ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse().ok())
        .expect("version printed");
    assert!(version <= 25, "QR version {version}");

    // HTTP/JSON on the same port, for apps that do not speak gRPC.
    let qr = {
        let out = license(
            &pki,
            &ep,
            None,
            &[
                "qr",
                &future.display().to_string(),
                "--svg",
                &dir.join("f.svg").display().to_string(),
            ],
        );
        assert!(out.status.success());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&future).expect("f")).expect("j");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(json["license"].as_str().expect("l"))
            .expect("b");
        qianlian_verifier::license::to_qr_payload(&bytes)
    };
    let http = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "--cacert",
            &pki.join("ca.crt").display().to_string(),
            "-H",
            "content-type: application/json",
            "-d",
            &serde_json::json!({ "qr": qr }).to_string(),
            &format!("{ep}/v1/licenses:verify").replace("127.0.0.1", "localhost"),
        ])
        .output()
        .expect("curl");
    let body: serde_json::Value = serde_json::from_slice(&http.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON from the HTTP endpoint ({e}): {}{}",
            stdout(&http),
            stderr(&http)
        )
    });
    assert_eq!(body["verdict"], "not-yet-valid", "{body}");
    assert_eq!(
        body["claims"]["issuer"]["department"], "market-regulation",
        "{body}"
    );
    let http = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "--cacert",
            &pki.join("ca.crt").display().to_string(),
            "-d",
            "{\"qr\": 1}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{ep}/v1/licenses:verify").replace("127.0.0.1", "localhost"),
        ])
        .output()
        .expect("curl");
    assert_eq!(stdout(&http), "400", "a bad body is a 400 with a reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_is_visible_on_every_node_of_the_cluster() {
    let cluster = Cluster::start(3, "");
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = leader % 3 + 1;
    let pki = cluster.env.pki();
    let dir = cluster.env.path();
    // Issued on a follower (forwarded to the leader), revoked on another node.
    let (bundle, hash) = issue(
        &pki,
        &cluster.endpoint(follower),
        dir,
        "c",
        &uscc(31),
        0,
        now() + 86_400,
    );
    let out = license(
        &pki,
        &cluster.endpoint(leader),
        Some("market-regulation"),
        &["revoke", &hash, "--reason", "fraud"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 1..=3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let v = verdict(&license(
                &pki,
                &cluster.endpoint(i),
                None,
                &["verify", &bundle.display().to_string()],
            ));
            if v == "revoked" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {i} still says {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A trust bundle from any node carries k of n node signatures and knows the revocation.
    let trust = dir.join("trust.json");
    let out = license(
        &pki,
        &cluster.endpoint(follower),
        None,
        &["trust-bundle", "--out", &trust.display().to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&[
        "license",
        "verify",
        &bundle.display().to_string(),
        "--offline",
        "--trust-bundle",
        &trust.display().to_string(),
    ]);
    assert_eq!(verdict(&out), "revoked", "{}", stdout(&out));
}

/// The license bytes (COSE) of a holder bundle written by `license issue --out`.
fn license_bytes(bundle: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle).expect("bundle")).expect("json");
    base64::engine::general_purpose::STANDARD
        .decode(json["license"].as_str().expect("license"))
        .expect("base64")
}

#[tokio::test]
async fn many_licenses_verify_in_one_call_each_with_its_own_verdict() {
    use qianlian_proto::v1::licenses_client::LicensesClient;
    use qianlian_proto::v1::notary_client::NotaryClient;
    use qianlian_proto::v1::verify_license_request::Document;
    use qianlian_proto::v1::{GetLogEntryRequest, VerifyLicenseRequest, VerifyLicensesRequest};

    let env = Env::new();
    let node = env.start();
    let pki = env.pki();
    let ep = node.endpoint();
    let dir = env.path();
    let t = now();
    let (a, _) = issue(&pki, &ep, dir, "batch-a", &uscc(31), 0, t + 86_400);
    let (b, _) = issue(&pki, &ep, dir, "batch-b", &uscc(32), 0, t + 86_400);
    let forged = dir.join("batch-forged.json");
    flip_license_byte(&a, 40, &forged);
    let doc = |bytes: Vec<u8>| VerifyLicenseRequest {
        document: Some(Document::License(bytes)),
    };
    let documents = vec![
        doc(license_bytes(&a)),
        doc(license_bytes(&forged)),
        doc(license_bytes(&b)),
        VerifyLicenseRequest {
            document: Some(Document::Qr("QL1:not base45".into())),
        },
        doc(license_bytes(&a)),
    ];

    // Public, like single verification: no client certificate.
    let ca = pki.join("ca.crt");
    let mut licenses = LicensesClient::new(channel(&node, tls(&ca, None)).await.expect("connect"));
    let r = licenses
        .verify_licenses(VerifyLicensesRequest {
            documents: documents.clone(),
        })
        .await
        .expect("verify licenses")
        .into_inner();
    let verdicts: Vec<&str> = r.verdicts.iter().map(|v| v.verdict.as_str()).collect();
    assert_eq!(
        verdicts,
        ["genuine", "tampered", "genuine", "tampered", "genuine"]
    );
    // Each verdict is the one VerifyLicense gives, but for the checkpoint given once.
    for (d, v) in documents.iter().zip(&r.verdicts) {
        let single = licenses
            .verify_license(d.clone())
            .await
            .expect("verify license")
            .into_inner();
        assert_eq!(single.verdict, v.verdict);
        assert_eq!(single.license_hash, v.license_hash);
        assert_eq!(single.log_index, v.log_index);
        assert_eq!(single.claims_json, v.claims_json);
    }
    let shared = r.checkpoint.as_ref().expect("the batch's checkpoint");
    let (cert, key) = env.identity("audit-office");
    let mut notary = NotaryClient::new(
        channel(&node, tls(&ca, Some((&cert, &key))))
            .await
            .expect("connect"),
    );
    for v in r.verdicts.iter().filter(|v| v.verdict == "genuine") {
        assert!(
            v.checkpoint.is_none(),
            "proven against the shared checkpoint"
        );
        assert_eq!(v.tree_size, shared.tree_size);
        let entry = notary
            .get_log_entry(GetLogEntryRequest {
                log_index: v.log_index,
            })
            .await
            .expect("log entry")
            .into_inner();
        let proof: Vec<[u8; 32]> = v
            .inclusion_proof
            .iter()
            .map(|h| h.as_slice().try_into().expect("32 bytes"))
            .collect();
        let root: [u8; 32] = shared.root_hash.as_slice().try_into().expect("32 bytes");
        qianlian_verifier::verify_inclusion(
            &qianlian_verifier::leaf_hash(&entry.record),
            v.log_index,
            shared.tree_size,
            &proof,
            &root,
        )
        .expect("the issuance is proven against the shared checkpoint");
    }

    // Bad batches are refused whole, with what to change.
    let refused = |documents: Vec<VerifyLicenseRequest>| {
        let mut licenses = licenses.clone();
        async move {
            licenses
                .verify_licenses(VerifyLicensesRequest { documents })
                .await
                .expect_err("refused")
        }
    };
    let s = refused(Vec::new()).await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(
        s.message().contains("at least one document"),
        "{}",
        s.message()
    );
    let s = refused(vec![
        doc(license_bytes(&a)),
        VerifyLicenseRequest { document: None },
    ])
    .await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().starts_with("document 1: "), "{}", s.message());
    let s = refused(vec![doc(license_bytes(&b)); 1001]).await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("at most 1000"), "{}", s.message());
}
