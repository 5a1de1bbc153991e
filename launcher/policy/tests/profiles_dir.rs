//! Every file in profiles/ is a built-in profile, and every built-in
//! profile parses and resolves.

#[test]
fn every_profile_file_is_built_in_and_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        files += 1;
        let name = path.file_stem().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        policy::ProfileFile::parse(&path.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, builtin) = policy::BUILTIN_PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}.yaml is not in BUILTIN_PROFILES"));
        assert_eq!(*builtin, text, "{name}: the embedded copy differs");
        policy::resolve(name, &policy::BuiltinOnly).unwrap();
    }
    assert_eq!(files, policy::BUILTIN_PROFILES.len());
}
