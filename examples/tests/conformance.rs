//! Runs the offline Gateway API conformance harness against `file-gateway` and fails when a
//! test listed in `conformance/expected-pass.txt` does not pass. See docs/conformance.md.

use std::path::PathBuf;

use conformance::runner::{RunnerOptions, read_expected, render, run, unmet_expectations};

#[test]
fn gateway_api_conformance() {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let expected_path = manifest_dir.join("../conformance/expected-pass.txt");
    let expected = read_expected(&expected_path).expect("read conformance/expected-pass.txt");
    let mut opts = RunnerOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_file-gateway")));
    // Only the expected tests: keeps the debug-build run to a few minutes. Run the
    // `conformance` binary without --test to see every test.
    opts.tests = expected.clone();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let results = runtime.block_on(run(&opts)).expect("harness runs");
    print!("{}", render(&results));
    let unmet = unmet_expectations(&results, &expected);
    assert!(
        unmet.is_empty(),
        "expected to pass but did not: {}",
        unmet.join(", ")
    );
}
