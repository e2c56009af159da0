//! Every example answers `--help` with its usage and exit code 0, and rejects a bad value with
//! clap's message and exit code 2. `cargo test` builds the examples beside the test binaries;
//! where they are absent (`cargo test --test examples_cli` alone may not build them) the test
//! says so and passes.

use std::path::PathBuf;
use std::process::Command;

const EXAMPLES: [&str; 7] = [
    "mnist",
    "transfer",
    "visualize",
    "augment",
    "zoo",
    "explain",
    "fine_tune",
];

/// `target/<profile>/examples/<name>`, next to this test's own `target/<profile>/deps/`.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.exists().then_some(path)
}

#[test]
fn every_example_prints_help_and_exits_0() {
    for name in EXAMPLES {
        let Some(path) = example(name) else {
            eprintln!("skipped: example {name} not built");
            continue;
        };
        let output = Command::new(&path).arg("--help").output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{name} --help: {stdout}");
        assert!(stdout.contains(&format!("Usage: {name}")), "{stdout}");
        for flag in ["--data-dir", "--seed", "--threads"] {
            assert!(stdout.contains(flag), "{name} lacks {flag}: {stdout}");
        }
        if name == "mnist" {
            for flag in ["--augment", "--ema"] {
                assert!(stdout.contains(flag), "mnist lacks {flag}: {stdout}");
            }
        }
    }
}

#[test]
fn bad_values_are_rejected_with_clap_messages() {
    for (name, args) in [
        ("mnist", &["--epochs", "0"][..]),
        ("mnist", &["--epochs", "-3"][..]),
        ("mnist", &["--lr", "nan"][..]),
        ("mnist", &["--ema", "1.5"][..]),
        ("mnist", &["--label-smoothing", "-0.1"][..]),
        ("transfer", &["--shots", "x"][..]),
        ("zoo", &["--threads", "0"][..]),
        ("augment", &[][..]),
        ("fine_tune", &["--model", "alexnet"][..]),
        ("fine_tune", &["--size", "4"][..]),
    ] {
        let Some(path) = example(name) else {
            eprintln!("skipped: example {name} not built");
            continue;
        };
        let output = Command::new(&path).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{name} {args:?}: {stderr}");
    }
}
