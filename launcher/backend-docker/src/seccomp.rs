//! The sandbox's seccomp profile in the JSON form the Docker Engine takes
//! in `--security-opt seccomp=...`: written by `policy::seccomp`, which the
//! socket proxy reads too.

pub use policy::seccomp::docker_json;
