//! The three-department container deployment (`deploy/compose.yaml`), brought up on this
//! machine's Docker engine by `deploy/compose-test.sh`: a cross-department read and a license
//! verification succeed, one container is stopped and the cluster keeps serving.

use std::path::Path;
use std::process::Command;

#[test]
fn compose_deployment_serves_and_survives_a_stopped_node() {
    let engine = Command::new("docker").arg("info").output();
    if !engine.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: no Docker engine answers `docker info`; the compose deployment was not tested"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose-test.sh");
    let out = Command::new(script)
        .output()
        .expect("run deploy/compose-test.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "compose test failed:\n{text}");
    assert!(text.contains("compose deployment: ok"), "{text}");
}
