//! The one shape long work reports progress in: a stage says what it starts and how
//! many units it has, advances by counts, and notes what a user should read. The
//! binary draws bars from it; a library caller can ignore it ([`Silent`]).

/// Receives the progress of long work. Calls come from worker threads too.
pub trait Progress: Sync {
    /// A phase of `total` units starts (`what`: "corpus", "queries", "pairs", …).
    fn start(&self, what: &str, total: usize);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: usize);
    /// The current phase is over.
    fn finish(&self) {}
    /// A status line shown with the current phase (loss, rate, …); may be dropped.
    fn message(&self, _message: &str) {}
    /// A line the user should read (kept apart from the bars).
    fn note(&self, message: &str);
}

/// Progress nobody watches; notes go to stderr.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: usize) {}
    fn advance(&self, _: usize) {}
    fn note(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// A [`Progress`] that options structs can hold and clone (`Default`: [`Silent`]).
#[derive(Clone)]
pub struct SharedProgress(pub std::sync::Arc<dyn Progress + Send>);

impl Default for SharedProgress {
    fn default() -> Self {
        Self(std::sync::Arc::new(Silent))
    }
}

impl std::fmt::Debug for SharedProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedProgress")
    }
}

impl Progress for SharedProgress {
    fn start(&self, what: &str, total: usize) {
        self.0.start(what, total);
    }
    fn advance(&self, n: usize) {
        self.0.advance(n);
    }
    fn finish(&self) {
        self.0.finish();
    }
    fn message(&self, message: &str) {
        self.0.message(message);
    }
    fn note(&self, message: &str) {
        self.0.note(message);
    }
}
