//! The workspace's layers, as Cargo resolves them: each crate's dependency tree holds
//! only what its layer needs. Cargo already refuses a cycle between crates; these catch
//! a dependency that would quietly pull one layer's concerns into another (`ctl`
//! growing a database driver, the core an HTTP server or an exporter).

use std::process::Command;

/// Every crate in `package`'s tree (normal and build dependencies), by name.
fn tree(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "--package",
            package,
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `package` depends on each of `has` and on none of `lacks`.
fn assert_layer(package: &str, has: &[&str], lacks: &[&str]) {
    let crates = tree(package);
    for name in has {
        assert!(
            crates.iter().any(|c| c == name),
            "{package} does not depend on {name}:\n{crates:?}"
        );
    }
    for name in lacks {
        assert!(
            !crates.iter().any(|c| c == name),
            "{package} depends on {name}:\n{crates:?}"
        );
    }
}

/// The HTTP server, flag parsing, password hashing and the exporters: the server's.
const SERVER_STACKS: &[&str] = &[
    "axum",
    "utoipa-axum",
    "rust-embed",
    "argon2",
    "governor",
    "metrics-exporter-prometheus",
    "metrics-process",
    "opentelemetry_sdk",
    "opentelemetry-otlp",
];

#[test]
fn the_core_depends_on_no_server_stack() {
    let mut lacks = vec!["cairn", "cairn-ctl", "cairn-bench", "clap"];
    lacks.extend(SERVER_STACKS);
    assert_layer(
        "cairn-core",
        &["cairn-workflow", "sqlx", "apalis-postgres"],
        &lacks,
    );
}

/// `ctl` talks to the API over HTTP: no database driver, queue or server, so it builds
/// in a fraction of the server's time.
#[test]
fn ctl_builds_without_the_servers_stacks() {
    let mut lacks = vec![
        "cairn",
        "cairn-core",
        "sqlx",
        "sqlx-core",
        "apalis",
        "apalis-postgres",
        "utoipa",
    ];
    lacks.extend(SERVER_STACKS);
    assert_layer("cairn-ctl", &["cairn-workflow"], &lacks);
}

/// The bench measures the shipped binary; it needs the core to prepare its database,
/// never the server's library.
#[test]
fn the_bench_stands_on_the_core_not_the_server() {
    assert_layer("cairn-bench", &["cairn-core"], &["cairn", "axum"]);
}
