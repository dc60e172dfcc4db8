//! Rebuilds when the dashboard the binary embeds changes, which cargo does not
//! otherwise watch: it is embedded from `frontend/dist/` (see `src/api/assets.rs`),
//! whose file names change with every `npm run build`.
//!
//! A path that does not exist would make cargo run this script, and so rebuild the
//! crate, on every build: without `frontend/dist`, `frontend/` is watched instead,
//! which changes when `dist/` appears.

use std::path::Path;

fn main() {
    if Path::new("frontend/dist").is_dir() {
        println!("cargo:rerun-if-changed=frontend/dist");
    } else if Path::new("frontend").is_dir() {
        println!("cargo:rerun-if-changed=frontend");
    }
}
