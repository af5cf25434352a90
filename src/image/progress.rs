//! What a person sees of a pull: bars (bytes and layers) when stderr is a terminal,
//! one summary line when it is not (a job's output), and nothing at all from the ranks
//! that only waited for another to do the work.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Ui {
    term: bool,
}

/// One phase (fetching, unpacking): a bar over bytes, with the layer in its message.
#[derive(Clone)]
pub struct Phase {
    bar: Option<ProgressBar>,
    pub started: Instant,
}

impl Ui {
    pub fn new() -> Ui {
        Ui {
            term: std::io::stderr().is_terminal(),
        }
    }

    pub fn phase(&self, what: &str, total: u64) -> Phase {
        let bar = self.term.then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(what.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Phase {
            bar,
            started: Instant::now(),
        }
    }

    /// The line that stays: on a terminal after the bars, else the only one.
    pub fn summary(&self, line: &str) {
        eprintln!("lwk-runc: {line}");
    }
}

impl Default for Ui {
    fn default() -> Self {
        Ui::new()
    }
}

impl Phase {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    pub fn layer(&self, k: usize, n: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!("layer {k}/{n}"));
        }
    }
    pub fn finish(&self) -> Duration {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.started.elapsed()
    }
}

/// 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
