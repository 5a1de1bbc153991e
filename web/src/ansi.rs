//! A session's output as the log shows it: text in segments, each with
//! the CSS classes of its colours. SGR colours and styles become classes;
//! every other escape sequence (cursor moves, titles, clipboard writes,
//! hyperlinks) and every control character but newline and tab is
//! dropped. The converter makes no markup: pages and the live script put
//! each segment's text in an element as text, so nothing the agent writes
//! can become markup whatever the converter does.
//!
//! It keeps its state across chunks: a colour set in one chunk holds in
//! the next, and a sequence or a character cut in two by a chunk's end is
//! finished by the next one.

/// The classes a segment may have: `fg0`–`fg15`, `bg0`–`bg15`, `b`
/// (bold), `dim`, `i` (italic), `u` (underline), `inv` (inverse).
pub const STYLE_CLASSES: &[&str] = &["b", "dim", "i", "u", "inv"];

/// Text with the classes it is shown with (space-separated; empty: none).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    pub class: String,
    pub text: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    inverse: bool,
}

impl Style {
    fn class(&self) -> String {
        let mut c: Vec<String> = Vec::new();
        if let Some(f) = self.fg {
            c.push(format!("fg{f}"));
        }
        if let Some(b) = self.bg {
            c.push(format!("bg{b}"));
        }
        for (on, name) in [
            (self.bold, "b"),
            (self.dim, "dim"),
            (self.italic, "i"),
            (self.underline, "u"),
            (self.inverse, "inv"),
        ] {
            if on {
                c.push(name.to_string());
            }
        }
        c.join(" ")
    }

    /// Applies an SGR sequence's parameters (`1;31`, `38;5;9`, empty).
    fn apply(&mut self, params: &str) {
        let nums: Vec<u16> = if params.is_empty() {
            vec![0]
        } else {
            params
                .split([';', ':'])
                .map(|p| p.parse().unwrap_or(0))
                .collect()
        };
        let mut i = 0;
        while i < nums.len() {
            let n = nums[i];
            match n {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                7 => self.inverse = true,
                22 => {
                    self.bold = false;
                    self.dim = false;
                }
                23 => self.italic = false,
                24 => self.underline = false,
                27 => self.inverse = false,
                30..=37 => self.fg = Some((n - 30) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((n - 40) as u8),
                49 => self.bg = None,
                90..=97 => self.fg = Some((n - 90 + 8) as u8),
                100..=107 => self.bg = Some((n - 100 + 8) as u8),
                38 | 48 => {
                    // 256 colours: the first 16 have classes; the rest, and
                    // 24-bit colours, are shown in the default colour.
                    let colour = match nums.get(i + 1) {
                        Some(5) => {
                            let c = nums.get(i + 2).copied();
                            i += 2;
                            c.filter(|c| *c < 16).map(|c| c as u8)
                        }
                        Some(2) => {
                            i += 4;
                            None
                        }
                        _ => None,
                    };
                    if n == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// What the converter is in the middle of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Text,
    /// After ESC.
    Escape,
    /// In a CSI sequence (`ESC [`), collecting parameters.
    Csi,
    /// In a string sequence (OSC, DCS, SOS, PM, APC) until BEL or ST.
    Str,
    /// In a string sequence, after an ESC (ST is `ESC \`).
    StrEscape,
}

/// The longest CSI parameter list kept; a longer one is dropped whole.
const MAX_PARAMS: usize = 64;

pub struct Ansi {
    style: Style,
    state: State,
    params: String,
    /// The start of a UTF-8 character cut by a chunk's end.
    partial: Vec<u8>,
}

impl Default for Ansi {
    fn default() -> Self {
        Ansi::new()
    }
}

impl Ansi {
    pub fn new() -> Ansi {
        Ansi {
            style: Style::default(),
            state: State::Text,
            params: String::new(),
            partial: Vec::new(),
        }
    }

    /// Converts the next chunk of output.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Segment> {
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(bytes);
        // Keep an incomplete character at the end for the next chunk.
        let cut = incomplete_tail(&data);
        self.partial = data.split_off(data.len() - cut);
        let text = String::from_utf8_lossy(&data);
        let mut out: Vec<Segment> = Vec::new();
        let mut current = String::new();
        let flush = |current: &mut String, out: &mut Vec<Segment>, style: &Style| {
            if current.is_empty() {
                return;
            }
            let class = style.class();
            match out.last_mut() {
                Some(last) if last.class == class => last.text.push_str(current),
                _ => out.push(Segment {
                    class,
                    text: current.clone(),
                }),
            }
            current.clear();
        };
        for c in text.chars() {
            match self.state {
                State::Text => match c {
                    '\u{1b}' => self.state = State::Escape,
                    // A C1 CSI is a CSI; other C1 controls are dropped.
                    '\u{9b}' => {
                        self.params.clear();
                        self.state = State::Csi;
                    }
                    '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => self.state = State::Str,
                    '\n' | '\t' => current.push(c),
                    c if c.is_control() => {}
                    c => current.push(c),
                },
                State::Escape => match c {
                    '[' => {
                        self.params.clear();
                        self.state = State::Csi;
                    }
                    ']' | 'P' | 'X' | '^' | '_' => self.state = State::Str,
                    // Any other escape is two characters (or a character
                    // set choice, whose third is dropped as text would be
                    // wrong: rare enough to show).
                    _ => self.state = State::Text,
                },
                State::Csi => match c {
                    '0'..='9'
                    | ';'
                    | ':'
                    | '?'
                    | '<'
                    | '='
                    | '>'
                    | ' '
                    | '!'
                    | '"'
                    | '$'
                    | '\''
                    | '#'
                    | '%'
                    | '&'
                    | '('
                    | ')'
                    | '*'
                    | '+'
                    | ','
                    | '-'
                    | '.'
                    | '/' => {
                        if self.params.len() < MAX_PARAMS {
                            self.params.push(c);
                        }
                    }
                    'm' => {
                        flush(&mut current, &mut out, &self.style);
                        if self.params.len() < MAX_PARAMS
                            && self
                                .params
                                .chars()
                                .all(|c| c.is_ascii_digit() || c == ';' || c == ':')
                        {
                            let params = std::mem::take(&mut self.params);
                            self.style.apply(&params);
                        }
                        self.state = State::Text;
                    }
                    // Any other final byte ends a sequence that is dropped;
                    // anything else is not a sequence at all.
                    '@'..='~' => self.state = State::Text,
                    '\u{1b}' => self.state = State::Escape,
                    _ => self.state = State::Text,
                },
                State::Str => match c {
                    '\u{7}' | '\u{9c}' => self.state = State::Text,
                    '\u{1b}' => self.state = State::StrEscape,
                    _ => {}
                },
                State::StrEscape => {
                    self.state = if c == '\\' { State::Text } else { State::Str };
                }
            }
        }
        flush(&mut current, &mut out, &self.style);
        out
    }
}

impl Ansi {
    /// The end of the output: a character still cut in two is shown as
    /// U+FFFD.
    pub fn finish(&mut self) -> Vec<Segment> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        self.partial.clear();
        vec![Segment {
            class: self.style.class(),
            text: char::REPLACEMENT_CHARACTER.to_string(),
        }]
    }
}

/// How many bytes at the end of `data` start a UTF-8 character that the
/// next chunk finishes (0–3).
fn incomplete_tail(data: &[u8]) -> usize {
    for back in 1..=3.min(data.len()) {
        let b = data[data.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// The text of `bytes` without any sequence or control character (what
/// the segments hold, joined): a plain-text download.
pub fn plain(bytes: &[u8]) -> String {
    let mut a = Ansi::new();
    let mut segs = a.push(bytes);
    segs.extend(a.finish());
    segs.into_iter().map(|seg| seg.text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(class: &str, text: &str) -> Segment {
        Segment {
            class: class.into(),
            text: text.into(),
        }
    }

    #[test]
    fn colours_become_classes_and_everything_else_goes() {
        let mut a = Ansi::new();
        let out =
            a.push(b"a\x1b[1;31mred\x1b[0m b\x1b]0;title\x07c\x1b[2Jd\r\x08e\x1b]52;c;aGk=\x1b\\f");
        assert_eq!(
            out,
            vec![seg("", "a"), seg("fg1 b", "red"), seg("", " bcdef")]
        );
    }

    #[test]
    fn state_holds_across_chunks() {
        let mut a = Ansi::new();
        assert_eq!(a.push(b"\x1b[3"), vec![]);
        assert_eq!(a.push(b"2mgreen"), vec![seg("fg2", "green")]);
        assert_eq!(a.push(b" still\x1b[9"), vec![seg("fg2", " still")]);
        assert_eq!(a.push(b"1mx"), vec![seg("fg9", "x")]);
        // A character cut in two.
        let e = "é".as_bytes();
        assert_eq!(a.push(&e[..1]), vec![]);
        assert_eq!(a.push(&e[1..]), vec![seg("fg9", "é")]);
    }

    #[test]
    fn colour_256_and_truecolour() {
        let mut a = Ansi::new();
        assert_eq!(a.push(b"\x1b[38;5;12mx"), vec![seg("fg12", "x")]);
        assert_eq!(a.push(b"\x1b[38;5;200my"), vec![seg("", "y")]);
        assert_eq!(a.push(b"\x1b[48;2;1;2;3;4mz"), vec![seg("u", "z")]);
    }

    #[test]
    fn plain_text_keeps_newlines_and_tabs() {
        assert_eq!(plain(b"a\tb\n\x1b[31mc\x1b[m\x00\x7f"), "a\tb\nc");
    }
}
