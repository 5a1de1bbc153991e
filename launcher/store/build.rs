// Embeds the SQL migrations (migrations/sqlite, migrations/postgres) as a
// table the store builds its migrators from at run time. sqlx's migrate!
// macro did this before, but its proc macro compiles a second copy of
// sqlx, both drivers, tokio and rustls for the build host: about a third
// of a clean build. File names follow sqlx's convention,
// `<version>_<description>.sql`, and the description is sqlx's (the
// underscores as spaces), so stores written before keep their records.
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut out = String::new();
    for (name, dir) in [("SQLITE", "sqlite"), ("POSTGRES", "postgres")] {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("a readable migrations directory").path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        writeln!(out, "pub(crate) static {name}: &[Embedded] = &[").unwrap();
        for path in files {
            let file = path
                .file_name()
                .unwrap()
                .to_str()
                .expect("a UTF-8 file name");
            let stem = file.strip_suffix(".sql").unwrap();
            if stem.ends_with(".up") || stem.ends_with(".down") {
                panic!(
                    "{file}: reversible migrations are not supported; use <version>_<description>.sql"
                );
            }
            let (version, description) = stem
                .split_once('_')
                .unwrap_or_else(|| panic!("{file}: name it <version>_<description>.sql"));
            let version: i64 = version
                .parse()
                .unwrap_or_else(|_| panic!("{file}: the version before '_' must be a number"));
            let description = description.replace('_', " ");
            let path = path.canonicalize().unwrap();
            writeln!(
                out,
                "    Embedded {{ version: {version}, description: {description:?}, sql: include_str!({:?}) }},",
                path.to_str().expect("a UTF-8 path")
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}
