//! Rebuilds when a migration changes, which cargo does not otherwise watch:
//! `sqlx::migrate!` embeds `migrations/` in the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
