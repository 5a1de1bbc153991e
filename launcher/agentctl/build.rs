// Tells the architecture test which platform the build is for.
fn main() {
    println!(
        "cargo:rustc-env=AGENTCTL_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}
