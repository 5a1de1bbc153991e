//! The ANSI converter against arbitrary output, in any chunking: it never
//! yields a class it was not built to yield, never a control character but
//! newline and tab, and loses no text: the segments joined are the plain
//! text whatever the chunk boundaries.

use proptest::prelude::*;
use web::ansi::{Ansi, STYLE_CLASSES, plain};

fn known_class(c: &str) -> bool {
    STYLE_CLASSES.contains(&c)
        || ["fg", "bg"].iter().any(|p| {
            c.strip_prefix(p)
                .and_then(|n| n.parse::<u8>().ok())
                .is_some_and(|n| n < 16)
        })
}

/// Output an agent may write: text, SGR sequences, other CSI and string
/// sequences, stray escapes, C0 and C1 controls, broken UTF-8.
fn output() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "[a-z <>&\"'=/é漢]{0,8}".prop_map(|s| s.into_bytes()),
        "[0-9;:]{0,12}".prop_map(|p| format!("\x1b[{p}m").into_bytes()),
        ("[0-9;?]{0,6}", "[@-~]").prop_map(|(p, f)| format!("\x1b[{p}{f}").into_bytes()),
        "[ -~]{0,12}".prop_map(|t| format!("\x1b]0;{t}\x07").into_bytes()),
        "[ -~]{0,12}".prop_map(|t| format!("\x1bP{t}\x1b\\").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..6),
        Just(b"\x1b".to_vec()),
        Just("\u{9b}31m\u{85}".as_bytes().to_vec()),
        Just(b"\r\x08\x00\x7f\n\t".to_vec()),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn only_known_classes_and_no_text_lost(bytes in output(), cuts in proptest::collection::vec(0usize..64, 0..8)) {
        let mut a = Ansi::new();
        let mut joined = String::new();
        let mut rest: &[u8] = &bytes;
        for cut in cuts {
            let (now, later) = rest.split_at(cut.min(rest.len()));
            for s in a.push(now) {
                for c in s.class.split_whitespace() {
                    prop_assert!(known_class(c), "class {c:?}");
                }
                joined.push_str(&s.text);
            }
            rest = later;
        }
        let mut last = a.push(rest);
        last.extend(a.finish());
        for s in last {
            for c in s.class.split_whitespace() {
                prop_assert!(known_class(c), "class {c:?}");
            }
            joined.push_str(&s.text);
        }
        prop_assert!(
            joined.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'),
            "a control character in {joined:?}"
        );
        prop_assert_eq!(joined, plain(&bytes));
    }
}
