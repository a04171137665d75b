//! Runs the offline Gateway API Inference Extension conformance suite against `file-gateway`
//! (emulated model servers, Pods and conformance endpoint pickers; see docs/conformance.md) and
//! fails when a test listed in `conformance/expected-pass-inference.txt` does not pass.

use std::path::PathBuf;

use conformance::inference::{InferenceOptions, run};
use conformance::runner::{read_expected, render, unmet_expectations};

#[test]
fn inference_extension_conformance() {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let expected_path = manifest_dir.join("../conformance/expected-pass-inference.txt");
    let expected = read_expected(&expected_path).expect("read expected-pass-inference.txt");
    let mut opts = InferenceOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_file-gateway")));
    opts.tests = expected.clone();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let started = std::time::Instant::now();
    let results = runtime.block_on(run(&opts)).expect("harness runs");
    print!("{}", render(&results));
    println!("took {:.1} s", started.elapsed().as_secs_f32());
    assert_eq!(results.len(), expected.len(), "every listed test ran");
    let unmet = unmet_expectations(&results, &expected);
    assert!(
        unmet.is_empty(),
        "expected to pass but did not: {}",
        unmet.join(", ")
    );
}
