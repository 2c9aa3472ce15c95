//! Progress bars for the library's [`Progress`] reports.

use indicatif::{ProgressBar, ProgressStyle};
use sieve_datasets::Progress;

/// One bar, redrawn for each phase; hidden with `--quiet` (notes still print).
pub struct Bars {
    bar: std::sync::Mutex<ProgressBar>,
    quiet: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: std::sync::Mutex::new(ProgressBar::hidden()),
            quiet,
        }
    }

    fn current(&self) -> ProgressBar {
        // A bar is a handle (an Arc): cloning it out of the lock is cheap.
        match self.bar.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A bar of `len` units labelled `msg`, or a hidden one.
pub fn bar(len: usize, msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Training's bar: elapsed time, steps, and the loss line as its message.
fn step_bar(total: usize) -> ProgressBar {
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}  (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

impl Progress for Bars {
    fn start(&self, what: &str, total: usize) {
        if self.quiet {
            return;
        }
        let pb = if what == "steps" {
            step_bar(total)
        } else {
            bar(total, what, false)
        };
        match self.bar.lock() {
            Ok(mut b) => *b = pb,
            Err(poisoned) => *poisoned.into_inner() = pb,
        }
    }

    fn advance(&self, n: usize) {
        self.current().inc(n as u64);
    }

    fn finish(&self) {
        self.current().finish_and_clear();
    }

    fn message(&self, message: &str) {
        self.current().set_message(message.to_string());
    }

    fn note(&self, message: &str) {
        let pb = self.current();
        if pb.is_hidden() {
            eprintln!("{message}");
        } else {
            pb.suspend(|| eprintln!("{message}"));
        }
    }
}
