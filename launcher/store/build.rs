// sqlx::migrate! embeds the SQL files at build time: rebuild when they
// change.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
