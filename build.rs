// Rebuild when a migration is added: `sqlx::migrate!` embeds the files of
// src/state/migrations at compile time, and Cargo does not watch a
// directory for new files on its own.
fn main() {
    println!("cargo:rerun-if-changed=src/state/migrations");
}
