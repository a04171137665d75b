//! The CLI against gateways that never become ready: it must report the failure in the table,
//! print the summary line, and exit non-zero when an expected test fails.

use std::process::Command;

#[test]
fn failing_gateway_is_reported_and_fails_the_expected_list() {
    let dir = std::env::temp_dir().join(format!("conformance-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    let expected = dir.join("expected.txt");
    std::fs::write(&expected, "HTTPRouteSimpleSameNamespace\n").expect("write expected");
    let out = Command::new(env!("CARGO_BIN_EXE_conformance"))
        .args([
            "--gateway-bin",
            "/bin/false",
            "--test",
            "HTTPRouteSimpleSameNamespace",
        ])
        .arg("--test")
        .arg("ListenerSetAllowedRoutesNamespaces")
        .arg("--expected")
        .arg(&expected)
        .output()
        .expect("run conformance");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "must fail: {stdout}");
    let row = |name: &str, result: &str| {
        stdout.lines().any(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            cols.len() >= 2 && cols[0] == name && cols[1] == result
        })
    };
    assert!(row("HTTPRouteSimpleSameNamespace", "FAIL"), "{stdout}");
    assert!(
        row("ListenerSetAllowedRoutesNamespaces", "SKIP"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed, 1 skipped"));
}

#[test]
fn unknown_test_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_conformance"))
        .args(["--gateway-bin", "/bin/false", "--test", "NoSuchTest"])
        .output()
        .expect("run conformance");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown test NoSuchTest"));
}

#[test]
fn inference_suite_reports_a_failing_gateway() {
    let dir = std::env::temp_dir().join(format!("conformance-cli-inf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    let expected = dir.join("expected.txt");
    std::fs::write(&expected, "InferencePoolAccepted\n").expect("write expected");
    let out = Command::new(env!("CARGO_BIN_EXE_conformance"))
        .args([
            "--suite",
            "inference",
            "--gateway-bin",
            "/bin/false",
            "--test",
            "InferencePoolAccepted",
        ])
        .arg("--expected")
        .arg(&expected)
        .output()
        .expect("run conformance");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("InferencePoolAccepted")
                && l.contains("| FAIL")
                && l.contains("harness:")),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed"));
}

#[test]
fn unknown_suite_or_inference_test_is_an_error() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_conformance"))
            .args(["--gateway-bin", "/bin/false"])
            .args(args)
            .output()
            .expect("run conformance")
    };
    let out = run(&["--suite", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown suite"));
    let out = run(&[
        "--suite",
        "inference",
        "--test",
        "HTTPRouteSimpleSameNamespace",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown inference test HTTPRouteSimpleSameNamespace")
    );
}
