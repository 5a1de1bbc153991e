//! What of an agent's output may reach the user's terminal.
//!
//! A terminal obeys the bytes it is sent: OSC 52 writes the clipboard, OSC
//! 0 the window title, DCS and CSI queries make it *answer*, and an answer
//! that arrives after agentctl has exited is read by the user's shell as
//! typed input. The agent controls its output, so output bound for a
//! terminal goes through a [`TermFilter`]:
//!
//! - [`Mode::Text`] (`agentctl logs`): printable text, `\t`, `\n`, `\r`,
//!   colours (SGR: `ESC [ digits;… m`) and plain cursor moves and erases
//!   (`ESC [ digits A`–`H`, `J`, `K`) pass; every other escape sequence,
//!   C0 and C1 control and DEL is dropped, and bytes that are not UTF-8
//!   become U+FFFD.
//! - [`Mode::Interactive`] (the live terminal of a session): everything a
//!   full-screen program needs passes, but not what reads or writes outside
//!   the screen: OSC 52 (clipboard), OSC 1337 and 5113 (file transfer),
//!   OSC colour queries (`…;?`), every DCS, APC, PM and SOS string, and the
//!   CSI queries (device status `n`, attributes `c`, window reports `t`,
//!   mode reports `$p`, `x`).
//!
//! Pure and streaming: sequences split across reads are held until whole.

/// What the output is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Text,
    Interactive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC.
    Esc,
    /// After ESC followed by intermediates (0x20–0x2F).
    EscIntermediate,
    Csi,
    /// A control string (OSC, DCS, APC, PM, SOS): `osc` tells which.
    Str {
        osc: bool,
    },
    /// Inside a control string, after its ESC (maybe the start of ST).
    StrEsc,
}

/// A CSI longer than this is not one a terminal program writes: dropped.
const MAX_CSI: usize = 64;
/// An OSC kept (interactive mode) is buffered up to this size.
const MAX_OSC: usize = 4096;

pub struct TermFilter {
    mode: Mode,
    state: State,
    /// The sequence being collected, from its ESC.
    seq: Vec<u8>,
    /// Whether the control string being read will be kept.
    keep_str: bool,
    /// An incomplete UTF-8 character from the last chunk.
    utf8: Vec<u8>,
}

impl TermFilter {
    pub fn new(mode: Mode) -> TermFilter {
        TermFilter {
            mode,
            state: State::Ground,
            seq: Vec::new(),
            keep_str: false,
            utf8: Vec::new(),
        }
    }

    /// Filters `input`, appending what may reach the terminal to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Ground => self.ground(b, out),
            State::Esc => {
                self.seq.push(b);
                match b {
                    b'[' => self.state = State::Csi,
                    b']' => self.start_str(true),
                    b'P' | b'X' | b'^' | b'_' => self.start_str(false),
                    0x20..=0x2f => self.state = State::EscIntermediate,
                    0x1b => {
                        self.seq.clear();
                        self.seq.push(0x1b);
                    }
                    _ => {
                        // A two-byte escape (charset, keypad, save cursor):
                        // kept live only, where programs use them.
                        if self.mode == Mode::Interactive && (0x30..=0x7e).contains(&b) {
                            out.extend_from_slice(&self.seq);
                        }
                        self.reset();
                    }
                }
            }
            State::EscIntermediate => {
                self.seq.push(b);
                if !(0x20..=0x2f).contains(&b) {
                    if self.mode == Mode::Interactive && (0x30..=0x7e).contains(&b) {
                        out.extend_from_slice(&self.seq);
                    }
                    self.reset();
                }
            }
            State::Csi => {
                self.seq.push(b);
                if (0x40..=0x7e).contains(&b) {
                    if self.csi_allowed() {
                        out.extend_from_slice(&self.seq);
                    }
                    self.reset();
                } else if !(0x20..=0x3f).contains(&b) || self.seq.len() > MAX_CSI {
                    // Not a well-formed CSI, or an absurd one: drop it.
                    self.reset();
                    if b == 0x1b {
                        self.state = State::Esc;
                        self.seq.push(b);
                    }
                }
            }
            State::Str { osc } => match b {
                0x07 if osc => self.end_str(out),
                0x1b => self.state = State::StrEsc,
                _ => self.str_byte(b),
            },
            State::StrEsc => {
                if b == b'\\' {
                    self.end_str(out);
                } else {
                    // An ESC inside a string that is not ST ends it (as a
                    // terminal would) and starts a new sequence.
                    self.reset();
                    self.state = State::Esc;
                    self.seq.push(0x1b);
                    self.byte(b, out);
                }
            }
        }
    }

    fn ground(&mut self, b: u8, out: &mut Vec<u8>) {
        if !self.utf8.is_empty() {
            if b & 0xc0 == 0x80 {
                self.utf8.push(b);
                let need = utf8_len(self.utf8[0]);
                if self.utf8.len() == need {
                    self.emit_char(out);
                }
                return;
            }
            // Cut short: the lead byte is not a character.
            self.utf8.clear();
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
        match b {
            0x1b => {
                self.state = State::Esc;
                self.seq.push(b);
            }
            b'\t' | b'\n' | b'\r' => out.push(b),
            // Backspace and bell: full-screen programs and shells use them.
            0x07 | 0x08 if self.mode == Mode::Interactive => out.push(b),
            0x00..=0x1f | 0x7f => {}
            0x20..=0x7e => out.push(b),
            _ => {
                if utf8_len(b) > 1 {
                    self.utf8.push(b);
                } else {
                    out.extend_from_slice("\u{fffd}".as_bytes());
                }
            }
        }
    }

    fn emit_char(&mut self, out: &mut Vec<u8>) {
        match std::str::from_utf8(&self.utf8) {
            // C1 controls (U+0080–U+009F): 8-bit CSI, OSC, DCS to some
            // terminals.
            Ok(s) if s.chars().all(|c| !('\u{80}'..='\u{9f}').contains(&c)) => {
                out.extend_from_slice(s.as_bytes())
            }
            Ok(_) => {}
            Err(_) => out.extend_from_slice("\u{fffd}".as_bytes()),
        }
        self.utf8.clear();
    }

    fn csi_allowed(&self) -> bool {
        // seq = ESC [ params intermediates final
        let body = &self.seq[2..];
        let (fin, rest) = body.split_last().expect("a final byte");
        let digits = rest.iter().all(|c| c.is_ascii_digit() || *c == b';');
        match self.mode {
            Mode::Text => digits && b"mABCDEFGHJK".contains(fin),
            Mode::Interactive => {
                let has_dollar = rest.contains(&b'$');
                !(matches!(fin, b'n' | b'c' | b't' | b'x') || (*fin == b'p' && has_dollar))
            }
        }
    }

    fn start_str(&mut self, osc: bool) {
        self.state = State::Str { osc };
        // DCS, APC, PM and SOS never pass; an OSC may (interactive), once
        // its number is known.
        self.keep_str = osc && self.mode == Mode::Interactive;
    }

    fn str_byte(&mut self, b: u8) {
        if self.keep_str {
            self.seq.push(b);
            if self.seq.len() > MAX_OSC {
                self.keep_str = false;
                self.seq.truncate(2);
            }
        }
    }

    fn end_str(&mut self, out: &mut Vec<u8>) {
        if self.keep_str && osc_allowed(&self.seq[2..]) {
            out.extend_from_slice(&self.seq);
            // Always end with ST: the BEL form has been consumed.
            out.extend_from_slice(b"\x1b\\");
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.state = State::Ground;
        self.seq.clear();
        self.keep_str = false;
    }
}

/// Whether an OSC payload (`Ps ; Pt`) may pass in interactive mode.
fn osc_allowed(payload: &[u8]) -> bool {
    let number = payload.split(|c| *c == b';').next().unwrap_or(b"");
    // 52: clipboard; 1337 (iTerm2) and 5113 (kitty): files; 5522 (kitty):
    // clipboard; 50: font query. Any `?` argument asks for an answer.
    if matches!(number, b"52" | b"1337" | b"5113" | b"5522" | b"50") {
        return false;
    }
    !payload.split(|c| *c == b';').skip(1).any(|arg| arg == b"?")
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

/// A writer that filters what goes through it.
pub struct FilterWriter<W: std::io::Write> {
    inner: W,
    filter: TermFilter,
    buf: Vec<u8>,
}

impl<W: std::io::Write> FilterWriter<W> {
    pub fn new(inner: W, mode: Mode) -> Self {
        FilterWriter {
            inner,
            filter: TermFilter::new(mode),
            buf: Vec::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for FilterWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.clear();
        self.filter.push(data, &mut self.buf);
        self.inner.write_all(&self.buf)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Output bound for one of the caller's streams: through a filter when that
/// stream is a terminal, byte for byte when it is a file or a pipe. Shared
/// by both backends' relays.
pub struct TermOutput {
    filter: Option<TermFilter>,
    scratch: Vec<u8>,
}

impl TermOutput {
    pub fn new(to_terminal: bool, mode: Mode) -> TermOutput {
        TermOutput {
            filter: to_terminal.then(|| TermFilter::new(mode)),
            scratch: Vec::new(),
        }
    }

    /// Writes `bytes` to `out` as this stream may show them.
    pub fn write(&mut self, bytes: &[u8], out: &mut dyn std::io::Write) -> std::io::Result<()> {
        match &mut self.filter {
            Some(f) => {
                self.scratch.clear();
                f.push(bytes, &mut self.scratch);
                out.write_all(&self.scratch)
            }
            None => out.write_all(bytes),
        }
    }
}

/// Filters a whole buffer at once.
pub fn filter(mode: Mode, input: &[u8]) -> Vec<u8> {
    let mut f = TermFilter::new(mode);
    let mut out = Vec::with_capacity(input.len());
    f.push(input, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(input: &str) -> String {
        String::from_utf8(filter(Mode::Text, input.as_bytes())).unwrap()
    }

    fn live(input: &str) -> String {
        String::from_utf8(filter(Mode::Interactive, input.as_bytes())).unwrap()
    }

    #[test]
    fn output_is_filtered_only_for_a_terminal() {
        let input = b"a\x1b]52;c;eA==\x07b";
        let mut raw = Vec::new();
        TermOutput::new(false, Mode::Text)
            .write(input, &mut raw)
            .unwrap();
        assert_eq!(raw, input);
        let mut shown = Vec::new();
        TermOutput::new(true, Mode::Text)
            .write(input, &mut shown)
            .unwrap();
        assert_eq!(shown, b"ab");
    }

    #[test]
    fn text_keeps_words_colours_and_moves() {
        assert_eq!(text("héllo\tworld\r\n"), "héllo\tworld\r\n");
        assert_eq!(text("\x1b[1;31mred\x1b[0m"), "\x1b[1;31mred\x1b[0m");
        assert_eq!(text("\x1b[2K\x1b[1Aup"), "\x1b[2K\x1b[1Aup");
    }

    #[test]
    fn text_drops_what_talks_to_the_terminal() {
        for attack in [
            "\x1b]52;c;ZXZpbA==\x07",
            "\x1b]0;title\x1b\\",
            "\x1bP$qm\x1b\\",
            "\x1b[6n",
            "\x1b[c",
            "\x1b[>c",
            "\x1b[21t",
            "\x1b[?1049h",
            "\x1b[?1000h",
            "\x1b_Gquery\x1b\\",
            "\x07\x08\x00\x7f",
            "\x1bc",
        ] {
            assert_eq!(text(&format!("a{attack}b")), "ab", "{attack:?}");
        }
        // A C1 CSI loses its introducer; what follows is plain text.
        assert_eq!(text("a\u{9b}6nb"), "a6nb");
    }

    #[test]
    fn live_keeps_full_screen_programs_and_drops_queries() {
        for kept in [
            "\x1b[?1049h",
            "\x1b[?25l",
            "\x1b[10;20H",
            "\x1b[38;5;200m",
            "\x1b(B",
            "\x1b7",
        ] {
            assert_eq!(live(kept), kept, "{kept:?}");
        }
        assert_eq!(live("\x1b]0;title\x07"), "\x1b]0;title\x1b\\");
        assert_eq!(live("\x1b]8;;https://x\x1b\\"), "\x1b]8;;https://x\x1b\\");
        for dropped in [
            "\x1b]52;c;ZXZpbA==\x07",
            "\x1b]1337;File=name=eA==:eA==\x07",
            "\x1b]11;?\x07",
            "\x1b]4;1;?\x1b\\",
            "\x1bP+q544e\x1b\\",
            "\x1b[6n",
            "\x1b[?6n",
            "\x1b[c",
            "\x1b[>0c",
            "\x1b[14t",
            "\x1b[?2004$p",
            "\x1b_Ga=q\x1b\\",
        ] {
            assert_eq!(live(&format!("a{dropped}b")), "ab", "{dropped:?}");
        }
    }

    #[test]
    fn sequences_split_across_reads_are_judged_whole() {
        let input = "x\x1b]52;c;ZXZp\x07y\x1b[31mz\x1b[6nw é";
        for mode in [Mode::Text, Mode::Interactive] {
            let whole = filter(mode, input.as_bytes());
            for cut in 0..input.len() {
                let mut f = TermFilter::new(mode);
                let mut out = Vec::new();
                f.push(&input.as_bytes()[..cut], &mut out);
                f.push(&input.as_bytes()[cut..], &mut out);
                assert_eq!(out, whole, "{mode:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(
            String::from_utf8(filter(Mode::Text, b"a\xffb\xc3")).unwrap(),
            "a\u{fffd}b"
        );
    }
}
