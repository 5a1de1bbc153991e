//! Progress bars for image pulls, on stderr, only when it is a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use image_store::{Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    phase: Mutex<Phase>,
}

impl Bars {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn for_stderr() -> Box<dyn Progress> {
        if std::io::stderr().is_terminal() {
            Box::new(Bars {
                multi: MultiProgress::new(),
                bars: Mutex::new(HashMap::new()),
                phase: Mutex::new(Phase::Fetching),
            })
        } else {
            Box::new(Lines)
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Progress for Bars {
    fn phase(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
    }

    fn layer_started(&self, digest: &str, bytes: Option<u64>) {
        let bar = self.multi.add(ProgressBar::new(bytes.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(short(digest).to_string());
        bar.set_message(self.phase.lock().unwrap().to_string());
        self.bars.lock().unwrap().insert(digest.to_string(), bar);
    }

    fn advanced(&self, digest: &str, bytes: u64) {
        if let Some(bar) = self.bars.lock().unwrap().get(digest) {
            bar.inc(bytes);
        }
    }

    fn layer_done(&self, digest: &str) {
        if let Some(bar) = self.bars.lock().unwrap().remove(digest) {
            bar.finish_with_message("done");
        }
    }

    fn message(&self, text: &str) {
        let _ = self.multi.println(text);
    }
}

/// One line per layer and phase, for logs.
struct Lines;

impl Progress for Lines {
    fn phase(&self, phase: Phase) {
        eprintln!("agentctl: {phase} layers");
    }
    fn layer_started(&self, _digest: &str, _bytes: Option<u64>) {}
    fn advanced(&self, _digest: &str, _bytes: u64) {}
    fn layer_done(&self, digest: &str) {
        eprintln!("agentctl:   {} done", short(digest));
    }
    fn message(&self, text: &str) {
        eprintln!("agentctl: {text}");
    }
}
