//! The systemd unit in `deploy/systemd/` passes `systemd-analyze verify` with the real binary.

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn the_systemd_unit_verifies_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit was not verified");
        return;
    }
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/qianlian.service"),
    )
    .expect("unit file");
    assert!(unit.contains("ExecStart=/usr/local/bin/qianlian serve --config"));
    // Verify against the binary just built, where the unit expects the installed one.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qianlian.service");
    let local = unit.replace(
        "/usr/local/bin/qianlian",
        &support::bin().display().to_string(),
    );
    std::fs::write(&path, local).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let err = support::stderr(&out);
    assert!(out.status.success(), "{err}");
    // Unknown keys and bad values are warnings, not failures: none may be printed.
    assert!(err.trim().is_empty(), "systemd-analyze warned:\n{err}");
}
