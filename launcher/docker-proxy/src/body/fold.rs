//! Go `encoding/json` key folding, and the duplicate-key check built on it.
//!
//! The Docker daemon decodes request bodies with Go's `encoding/json`, which
//! matches an object key to a struct field case-insensitively when no field
//! has exactly that name, and lets the last of several matching keys win. So
//! `{"Privileged":false,"privileged":true}` runs a privileged container even
//! though a decoder that keeps the first key, or matches names exactly, sees
//! `false`. Rejecting every object with two keys that Go would treat as the
//! same name removes that disagreement before any typed decoding happens.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::error::{BodyError, Segment, join_path};

/// The form of `key` that Go's `encoding/json` compares when it matches keys
/// to struct fields case-insensitively: two keys are the same field for Go
/// exactly when their `go_fold`s are equal.
///
/// Go compares names with Unicode *simple* case folding (`bytes.EqualFold`,
/// or in Go 1.21+ a fold to the smallest rune of each `unicode.SimpleFold`
/// orbit). That is more than ASCII case-insensitivity: U+212A KELVIN SIGN is
/// in the orbit of `k` and U+017F LATIN SMALL LETTER LONG S in that of `s`,
/// so Go reads `"\u{212A}ernelMemory"` as `KernelMemory` and
/// `"\u{17F}ecurityOpt"` as `SecurityOpt`. A check that only lowercases
/// ASCII would miss those spellings.
///
/// Rust's standard library has no case-folding table, so each character is
/// mapped through its simple uppercase and then its simple lowercase. That
/// lands every member of an orbit on one character even where lowercasing
/// alone would not (`ς`/`σ`/`Σ`, `ϐ`/`β`, `µ`/`μ`, the Kelvin sign, the long
/// s). Dotted and dotless Turkish i are the exception: their case mappings
/// cross orbits (`ı` uppercases to `I`) but simple folding keeps each of
/// them in an orbit of its own, so they map to themselves. The resulting
/// classes were compared, for every code point, with Unicode 14's
/// CaseFolding.txt (statuses C and S) and agree on all characters assigned
/// in it. Rust's tables may be newer than the Go release an engine was built
/// with; folding a few new pairs Go does not know only refuses more bodies.
pub fn go_fold(key: &str) -> String {
    key.chars().map(fold_char).collect()
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    if matches!(c, '\u{130}' | '\u{131}') {
        return c;
    }
    // Characters whose uppercase is several characters (ß -> SS, ᾀ -> ἈΙ)
    // have no simple uppercase; their own lowercase is the orbit's member.
    let upper = single(c.to_uppercase()).unwrap_or(c);
    single(upper.to_lowercase())
        .or_else(|| single(c.to_lowercase()))
        .unwrap_or(c)
}

fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

/// Fails on the first JSON object (at any depth, including inside arrays and
/// inside free-form maps such as `Labels`) that holds two keys with the same
/// [`go_fold`], exact repeats included. Also fails on anything that is not a
/// single well-formed JSON document: syntax errors, invalid UTF-8, trailing
/// data, or nesting deeper than serde_json's recursion limit (128), which
/// keeps this walk's recursion bounded.
pub fn check_duplicates(bytes: &[u8]) -> Result<(), BodyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut path = Vec::new();
    let mut found = None;
    let walked = Walk {
        path: &mut path,
        found: &mut found,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match walked {
        Ok(()) => Ok(()),
        Err(err) => Err(found.unwrap_or_else(|| BodyError::Invalid {
            // The walk leaves `path` where it stopped, which is where the
            // syntax error is.
            path: join_path(&path),
            message: err.to_string(),
        })),
    }
}

struct Walk<'a> {
    path: &'a mut Vec<Segment>,
    found: &'a mut Option<BodyError>,
}

impl Walk<'_> {
    fn child(&mut self) -> Walk<'_> {
        Walk {
            path: self.path,
            found: self.found,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        for index in 0.. {
            self.path.push(Segment::Index(index));
            // On error the segment stays, so the caller can report where.
            if seq.next_element_seed(self.child())?.is_none() {
                self.path.pop();
                break;
            }
            self.path.pop();
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // folded key -> the key as first written
        let mut seen: HashMap<String, String> = HashMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let folded = go_fold(&key);
            if let Some(previous) = seen.get(&folded) {
                self.path.push(Segment::Key(key.clone()));
                *self.found = Some(BodyError::DuplicateKey {
                    path: join_path(self.path),
                    key,
                    previous: previous.clone(),
                });
                return Err(de::Error::custom("duplicate key"));
            }
            self.path.push(Segment::Key(key.clone()));
            map.next_value_seed(self.child())?;
            self.path.pop();
            seen.insert(folded, key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(body: &str) -> BodyError {
        check_duplicates(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn ascii_case_folds() {
        assert_eq!(go_fold("Privileged"), go_fold("privileged"));
        assert_eq!(go_fold("HOSTCONFIG"), go_fold("HostConfig"));
        assert_ne!(go_fold("Privileged"), go_fold("Privilege"));
        assert_eq!(go_fold("Cpu-Shares_1"), "cpu-shares_1");
    }

    #[test]
    fn kelvin_sign_folds_to_k() {
        assert_eq!(go_fold("\u{212A}ind"), go_fold("kind"));
        assert_eq!(go_fold("\u{212A}ind"), go_fold("Kind"));
        assert_eq!(go_fold("\u{212A}ernelMemory"), go_fold("KernelMemory"));
    }

    #[test]
    fn long_s_folds_to_s() {
        assert_eq!(go_fold("\u{17F}ecurityOpt"), go_fold("SecurityOpt"));
        assert_eq!(go_fold("Sy\u{17F}ctls"), go_fold("Sysctls"));
    }

    #[test]
    fn non_ascii_orbits_fold_together() {
        // Each group is one unicode.SimpleFold orbit.
        for orbit in [
            &["\u{3A3}", "\u{3C3}", "\u{3C2}"][..], // Σ σ ς
            &["\u{392}", "\u{3B2}", "\u{3D0}"],     // Β β ϐ
            &["\u{39C}", "\u{3BC}", "\u{B5}"],      // Μ μ µ (micro sign)
            &["\u{1E9E}", "\u{DF}"],                // ẞ ß
            &["\u{1F88}", "\u{1F80}"],              // ᾈ ᾀ
            &["\u{1C4}", "\u{1C5}", "\u{1C6}"],     // Ǆ ǅ ǆ
            &["\u{399}", "\u{3B9}", "\u{345}", "\u{1FBE}"],
            &["\u{13A0}", "\u{AB70}"], // Cherokee Ꭰ ꭰ
        ] {
            for s in orbit {
                assert_eq!(go_fold(s), go_fold(orbit[0]), "{s:?} vs {:?}", orbit[0]);
            }
        }
    }

    #[test]
    fn turkish_i_stays_apart() {
        // Simple folding leaves İ and ı in orbits of their own.
        assert_ne!(go_fold("\u{130}"), go_fold("i"));
        assert_ne!(go_fold("\u{131}"), go_fold("i"));
        assert_ne!(go_fold("\u{131}d"), go_fold("Id"));
    }

    #[test]
    fn case_variant_duplicate_names_both_keys() {
        let err = dup(r#"{"Privileged":false,"privileged":true}"#);
        assert_eq!(
            err,
            BodyError::DuplicateKey {
                path: "privileged".into(),
                key: "privileged".into(),
                previous: "Privileged".into(),
            }
        );
        let msg = err.to_string();
        assert!(msg.contains(r#""privileged""#), "{msg}");
        assert!(msg.contains(r#""Privileged""#), "{msg}");
    }

    #[test]
    fn nested_duplicate_reports_object_path() {
        let err = dup(r#"{"Image":"x","HostConfig":{"Privileged":false,"privileged":true}}"#);
        assert_eq!(err.path(), "HostConfig.privileged");
        assert_eq!(
            err.to_string(),
            r#"duplicate key "privileged" in HostConfig: Docker would read it as "Privileged", which is already present"#
        );
    }

    #[test]
    fn kelvin_and_long_s_duplicates() {
        let err = dup("{\"HostConfig\":{\"KernelMemory\":1,\"\u{212A}ernelMemory\":2}}");
        assert_eq!(err.path(), "HostConfig.\u{212A}ernelMemory");
        assert!(
            matches!(&err, BodyError::DuplicateKey { previous, .. } if previous == "KernelMemory")
        );

        let err = dup("{\"HostConfig\":{\"\u{17F}ecurityOpt\":[],\"SecurityOpt\":[\"x\"]}}");
        assert!(matches!(
            &err,
            BodyError::DuplicateKey { key, previous, .. }
                if key == "SecurityOpt" && previous == "\u{17F}ecurityOpt"
        ));
    }

    #[test]
    fn exact_duplicate() {
        let err = dup(r#"{"Image":"a","Image":"b"}"#);
        assert_eq!(
            err,
            BodyError::DuplicateKey {
                path: "Image".into(),
                key: "Image".into(),
                previous: "Image".into(),
            }
        );
    }

    #[test]
    fn escaped_key_is_compared_decoded() {
        let err = dup(r#"{"Privileged":false,"Privil\u0065ged":true}"#);
        assert_eq!(err.path(), "Privileged");
    }

    #[test]
    fn duplicate_inside_array_of_objects() {
        let err =
            dup(r#"{"HostConfig":{"Mounts":[{"Type":"bind","type":"volume"},{"Type":"tmpfs"}]}}"#);
        assert_eq!(err.path(), "HostConfig.Mounts[0].type");
        assert!(
            err.to_string().contains("in HostConfig.Mounts[0]:"),
            "{err}"
        );

        let err =
            dup(r#"{"HostConfig":{"Mounts":[{"Type":"bind"},{"Target":"/a","TARGET":"/b"}]}}"#);
        assert_eq!(err.path(), "HostConfig.Mounts[1].TARGET");
    }

    #[test]
    fn duplicate_inside_free_form_map() {
        let err = dup(r#"{"Labels":{"a":"1","A":"2"}}"#);
        assert_eq!(err.path(), "Labels.A");
    }

    #[test]
    fn distinct_keys_pass() {
        check_duplicates(
            br#"{"Privileged":true,"PidMode":"","Labels":{"a":"1","b":"2"},"x":[{"a":1},{"a":2}],"n":null,"f":1.5}"#,
        )
        .unwrap();
        check_duplicates(b" [1, \"two\", {}, []] \n").unwrap();
        check_duplicates("{\"\u{131}d\":1,\"Id\":2}".as_bytes()).unwrap();
    }

    #[test]
    fn same_key_in_sibling_objects_is_fine() {
        check_duplicates(br#"{"A":{"x":1},"B":{"x":2},"C":[{"x":1},{"X":2}]}"#).unwrap();
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = check_duplicates(deep.as_bytes()).unwrap_err();
        assert!(matches!(err, BodyError::Invalid { .. }), "{err:?}");

        let deep = r#"{"a":"#.repeat(10_000) + "1" + &"}".repeat(10_000);
        let err = check_duplicates(deep.as_bytes()).unwrap_err();
        assert!(matches!(err, BodyError::Invalid { .. }), "{err:?}");
    }

    #[test]
    fn trailing_data_is_rejected() {
        for body in [
            &br#"{"Image":"x"} garbage"#[..],
            br#"{"Image":"x"}{"Privileged":true}"#,
            br#"{"Image":"x"} 1"#,
        ] {
            let err = check_duplicates(body).unwrap_err();
            assert!(matches!(err, BodyError::Invalid { .. }), "{err:?}");
        }
        check_duplicates(b"{\"Image\":\"x\"}\r\n\t ").unwrap();
    }

    #[test]
    fn malformed_json_is_invalid_with_location() {
        let err = check_duplicates(br#"{"HostConfig":{"Binds":["a",}}"#).unwrap_err();
        assert_eq!(err.path(), "HostConfig.Binds[1]");
        assert!(matches!(err, BodyError::Invalid { .. }));

        for body in [
            &b""[..],
            b"{",
            b"nul",
            b"{\"a\":\"\xff\"}",
            br#"{"a":"\ud800"}"#,
        ] {
            assert!(matches!(
                check_duplicates(body),
                Err(BodyError::Invalid { .. })
            ));
        }
    }
}
