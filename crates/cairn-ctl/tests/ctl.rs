//! `ctl` as a binary of its own: it checks workflow files with no API and no database
//! (that it is built from the workflow crate alone is checked with the workspace's
//! layers, in the root's `tests/layers.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Runs the `ctl` binary with no API to reach: (exit code, stdout).
fn ctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ctl"))
        .args(args)
        .env("CAIRN_API_URL", "http://127.0.0.1:1")
        .env_remove("CAIRN_TOKEN")
        .env("HOME", std::env::temp_dir())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .expect("run ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A fresh folder under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("cairn-ctl-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a workflow file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

const GREET: &str = r#"
description = "test"

[input]
name = { type = "string" }

[[steps]]
id = "greet"
kind = "sql"
query = "select 'hi ' || $1::text as text"
params = ["{{ input.name }}"]
"#;

#[test]
fn validate_reports_located_errors_without_an_api_or_a_database() {
    let dir = Scratch::new();
    let good = dir.write("good.toml", GREET);
    dir.write(
        "bad.toml",
        "[[steps]]\nid = \"a\"\nkind = \"sql\"\nquery = \"select 1\"\nneeds = [\"ghost\"]\n",
    );
    dir.write("broken.toml", "[[steps]\nid = 1\n");

    let (code, out) = ctl(&["workflow", "validate", path(&dir.0)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bad.toml:5:10: step `a` needs unknown step `ghost`"),
        "{out}"
    );
    assert!(out.contains("broken.toml:1:"), "{out}");
    assert!(!out.contains("good.toml"), "{out}");

    let (code, out) = ctl(&["workflow", "validate", path(&good), "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(v["valid"], true);
}

#[test]
fn the_shipped_examples_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let (code, out) = ctl(&["workflow", "validate", path(&examples)]);
    assert_eq!(code, 0, "{out}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
