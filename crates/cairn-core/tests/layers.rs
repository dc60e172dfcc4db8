//! The core stays below the server: its dependency tree has nothing that serves HTTP,
//! parses flags, hashes passwords or exports metrics and traces, and no crate of
//! Cairn's above it. Cargo already refuses a cycle; this catches a dependency that
//! would quietly pull a server's concern down into the core.

use std::process::Command;

#[test]
fn the_core_depends_on_no_server_stack() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "--package",
            "cairn-core",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for below in ["cairn-workflow", "sqlx", "apalis-postgres"] {
        assert!(crates.contains(&below), "no {below} in:\n{tree}");
    }
    for server_only in [
        "cairn",
        "cairn-ctl",
        "cairn-bench",
        "axum",
        "utoipa-axum",
        "rust-embed",
        "clap",
        "argon2",
        "governor",
        "metrics-exporter-prometheus",
        "metrics-process",
        "opentelemetry_sdk",
        "opentelemetry-otlp",
    ] {
        assert!(
            !crates.contains(&server_only),
            "cairn-core depends on {server_only}:\n{tree}"
        );
    }
}
