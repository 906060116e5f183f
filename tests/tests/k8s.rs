//! The Kubernetes deployment in deploy/k8s: the manifests pass schema validation (when a
//! validator can be had here), the node config, the Secrets the script writes and the
//! cluster-init Job agree with each other, and the Job's command is safe to run again.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use qianlian_gateway::node::config::NodeConfig;
use support::*;

/// Pinned so a new schema release cannot change the verdict under us.
const VALIDATOR_PACKAGE: &str = "kubernetes-validate==1.37.0";

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Run to completion, killing the child after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("{cmd:?}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            Err(format!("{cmd:?} did not finish within {limit:?}"))
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A schema validator: `kubeconform` or `kubernetes-validate` if installed, else
/// `kubernetes-validate` from PyPI in a venv kept beside the build (installed once).
fn validator() -> Result<Vec<String>, String> {
    if let Some(k) = on_path("kubeconform") {
        return Ok(vec![
            k.display().to_string(),
            "-strict".into(),
            "-summary".into(),
        ]);
    }
    if let Some(k) = on_path("kubernetes-validate") {
        return Ok(vec![k.display().to_string(), "--strict".into()]);
    }
    let venv = bin()
        .parent()
        .map(|d| d.join("kubernetes-validate-venv"))
        .ok_or("no target folder")?;
    let exe = venv.join("bin").join("kubernetes-validate");
    if !exe.is_file() {
        let python = on_path("python3").ok_or("python3 is not installed")?;
        let out = run_bounded(
            Command::new(&python).args(["-m", "venv"]).arg(&venv),
            Duration::from_secs(120),
        )?;
        if !out.status.success() {
            return Err(format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let out = run_bounded(
            Command::new(venv.join("bin").join("pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                VALIDATOR_PACKAGE,
            ]),
            Duration::from_secs(300),
        )?;
        if !out.status.success() || !exe.is_file() {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(format!(
                "pip install {VALIDATOR_PACKAGE} failed (no PyPI here?): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(vec![exe.display().to_string(), "--strict".into()])
}

/// The Secrets `deploy/k8s/pki-secret.sh` prints for a fresh PKI in `dir`.
fn secrets(dir: &Path) -> String {
    let out = run_bounded(
        Command::new("sh")
            .arg(k8s_dir().join("pki-secret.sh"))
            .arg(dir.join("pki"))
            .env("QIANLIAN_BIN", bin()),
        Duration::from_secs(120),
    )
    .expect("run pki-secret.sh");
    assert!(
        out.status.success(),
        "pki-secret.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Keys of the Secret named `name` in the script's output.
fn secret_keys(yaml: &str, name: &str) -> Vec<String> {
    let doc = yaml
        .split("\n---\n")
        .find(|d| d.contains(&format!("  name: {name}\n")))
        .unwrap_or_else(|| panic!("no Secret {name}"));
    let data = doc.split("\ndata:\n").nth(1).expect("data");
    data.lines()
        .filter_map(|l| {
            l.strip_prefix("  ")?
                .split_once(": ")
                .map(|(k, _)| k.to_owned())
        })
        .collect()
}

#[test]
fn manifests_and_secrets_pass_schema_validation() {
    let validator = match validator() {
        Ok(v) => v,
        Err(why) => {
            eprintln!("SKIPPED: no Kubernetes schema validator could be had: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    // The full rendering with the generated ConfigMap, if kustomize (in kubectl) is here.
    match on_path("kubectl") {
        Some(kubectl) => {
            let out = run_bounded(
                Command::new(kubectl).arg("kustomize").arg(k8s_dir()),
                Duration::from_secs(60),
            )
            .expect("kubectl kustomize");
            assert!(
                out.status.success(),
                "kubectl kustomize deploy/k8s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rendered = tmp.path().join("rendered.yaml");
            std::fs::write(&rendered, &out.stdout).expect("write");
            let text = String::from_utf8_lossy(&out.stdout);
            for kind in ["Namespace", "Service", "StatefulSet", "Job", "ConfigMap"] {
                assert!(
                    text.contains(&format!("kind: {kind}\n")),
                    "{kind} in the rendering"
                );
            }
            files.push(rendered);
        }
        None => {
            eprintln!(
                "kubectl is not installed: validating the resource files one by one (the generated ConfigMap is not checked)"
            );
            for f in [
                "namespace.yaml",
                "services.yaml",
                "statefulset.yaml",
                "cluster-init-job.yaml",
            ] {
                files.push(k8s_dir().join(f));
            }
        }
    }
    let secret = tmp.path().join("secrets.yaml");
    std::fs::write(&secret, secrets(tmp.path())).expect("write");
    files.push(secret);

    let run = |paths: &[PathBuf]| {
        run_bounded(
            Command::new(&validator[0])
                .args(&validator[1..])
                .args(paths),
            Duration::from_secs(120),
        )
        .expect("run the validator")
    };
    let out = run(&files);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "validation failed:\n{report}");
    eprintln!("{report}");

    // The validator does refuse a broken manifest: a field that does not exist, a wrong type.
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(
        &broken,
        read(&k8s_dir().join("statefulset.yaml"))
            .replace("replicas: 3", "replicas: three")
            .replace("serviceName:", "serviceNam:"),
    )
    .expect("write");
    assert!(
        !run(&[broken]).status.success(),
        "the validator accepted a broken StatefulSet"
    );
}

#[test]
fn node_config_secrets_and_cluster_init_job_agree() {
    let dir = k8s_dir();
    let config_text = read(&dir.join("config/node.toml"));
    let kustomization = read(&dir.join("kustomization.yaml"));
    let job = read(&dir.join("cluster-init-job.yaml"));
    let statefulset = read(&dir.join("statefulset.yaml"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = secrets(tmp.path());
    let pki_keys = secret_keys(&yaml, "qianlian-pki");
    let operator_keys = secret_keys(&yaml, "qianlian-operator");
    assert!(
        !yaml.contains("ca.key"),
        "the CA key never goes into a Secret"
    );

    assert!(statefulset.contains("replicas: 3"));
    assert!(statefulset.contains("serviceName: qianlian-peers"));
    for n in 0..3u64 {
        let host = format!("qianlian-{n}");
        let c = NodeConfig::parse_with_env(
            &config_text,
            Path::new("/config"),
            Path::new("/config/node.toml"),
            &[("HOSTNAME".to_owned(), host.clone())],
        )
        .unwrap_or_else(|e| panic!("pod {host}: {e}"));
        assert_eq!(c.node_id, n + 1, "pod {host} is node {}", n + 1);
        assert_eq!(c.advertise, format!("https://{host}.qianlian-peers:7400"));
        assert!(!c.bootstrap, "the Job forms the cluster, not a node alone");
        // The Job names every node at the address it advertises.
        assert!(
            job.contains(&format!("--node={}={}\n", c.node_id, c.advertise)),
            "the cluster-init Job names node {} at {}",
            c.node_id,
            c.advertise
        );
        let mut files = vec![
            c.tls.ca.clone(),
            c.tls.cert.clone(),
            c.tls.key.clone(),
            c.checkpoint.signing_key.clone(),
            c.policy.model.clone(),
            c.policy.rules.clone(),
        ];
        files.extend(c.licenses.directory.clone());
        files.extend(c.licenses.subject_key.clone());
        files.extend(c.licenses.signing_keys.iter().cloned());
        files.extend(c.licenses.trust_node_keys.iter().cloned());
        for f in files {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .expect("file name")
                .to_owned();
            match f.parent().and_then(|p| p.to_str()) {
                Some("/pki") => assert!(
                    pki_keys.contains(&name),
                    "{} (node {}) is not in the qianlian-pki Secret: {pki_keys:?}",
                    f.display(),
                    c.node_id
                ),
                Some("/config") => {
                    assert!(
                        kustomization.contains(&format!("- config/{name}\n")),
                        "{name} is not in the ConfigMap"
                    );
                    assert!(dir.join("config").join(&name).is_file());
                }
                _ => panic!("{}: neither the Secret nor the ConfigMap", f.display()),
            }
        }
        assert_eq!(c.data_dir, Path::new("/data"));
    }
    for key in ["ca.crt", "ops.crt", "ops.key"] {
        assert!(operator_keys.contains(&key.to_owned()), "{key}");
        assert!(
            job.contains(&format!("/operator/{key}")),
            "{key} in the Job"
        );
    }
    // The policy in the ConfigMap is the repository's.
    for f in ["model.conf", "policy.csv"] {
        assert_eq!(
            read(&dir.join("config").join(f)),
            read(&policies().join(f)),
            "deploy/k8s/config/{f} differs from policies/{f}: copy it again"
        );
    }
}

fn cluster_init(env: &Env, node: &Node, extra: &[&str]) -> Output {
    let pki = env.pki();
    let endpoint = node.endpoint();
    let member = format!("1={endpoint}");
    let ca = pki.join("ca.crt").display().to_string();
    let (cert, key) = env.identity("ops");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let mut args = vec![
        "cluster",
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--endpoint",
        &endpoint,
        "init",
        "--node",
        &member,
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

#[test]
fn cluster_init_job_command_initialises_once_and_then_does_nothing() {
    let env = Env::new();
    let config = env.write_config(&policies().join("policy.csv"), "");
    let text = read(&config).replace("bootstrap = true", "bootstrap = false");
    std::fs::write(&config, text).expect("write");
    let node = Node::spawn(&config, &env.path().join("node.log"));

    let first = cluster_init(&env, &node, &["--skip-if-initialised"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        !stdout(&first).contains("already initialised"),
        "{}",
        stdout(&first)
    );
    assert!(
        stdout(&first).contains("voters:   1="),
        "{}",
        stdout(&first)
    );

    // The Job runs again (a retry, or the manifests applied again): nothing happens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        let out = cluster_init(&env, &node, &["--skip-if-initialised"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("the cluster is already initialised; nothing to do"),
        "{}",
        stdout(&again)
    );
    assert!(
        stdout(&again).contains("voters:   1="),
        "{}",
        stdout(&again)
    );
    // Without the flag a second init is refused: the flag is what makes the Job safe.
    let plain = cluster_init(&env, &node, &[]);
    assert!(!plain.status.success(), "{}", stdout(&plain));
}

/// The pods run as the image's own non-root user (the Dockerfile's `USER`), their volumes get
/// its group, and the secrets they mount are readable by that group.
#[test]
fn pods_run_as_the_images_non_root_user() {
    let dockerfile = read(&k8s_dir().join("../Dockerfile"));
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the Dockerfile names a USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    assert_ne!(uid, "0", "the image must not run as root");
    for name in ["statefulset.yaml", "cluster-init-job.yaml"] {
        let manifest = read(&k8s_dir().join(name));
        for line in [
            "runAsNonRoot: true".to_owned(),
            format!("runAsUser: {uid}"),
            format!("runAsGroup: {gid}"),
            format!("fsGroup: {gid}"),
        ] {
            assert!(manifest.contains(&line), "{name} lacks `{line}`");
        }
        for mode in manifest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("defaultMode: "))
        {
            assert_eq!(mode, "0440", "{name}: a secret the pod's group cannot read");
        }
    }
}
