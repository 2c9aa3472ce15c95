use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, LoadOptions};

/// How many example locations a report keeps per category: enough to find
/// the pattern, few enough that a summary of a broken million-line file stays
/// readable.
pub const MAX_EXAMPLES: usize = 5;

/// A category of suspicious-but-loadable input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Issue {
    DuplicateDocId,
    DuplicateQueryId,
    EmptyDoc,
    EmptyQuery,
    QrelsUnknownQuery,
    QrelsUnknownDoc,
    DuplicateQrel,
}

impl Issue {
    pub const ALL: [Issue; 7] = [
        Issue::DuplicateDocId,
        Issue::DuplicateQueryId,
        Issue::EmptyDoc,
        Issue::EmptyQuery,
        Issue::QrelsUnknownQuery,
        Issue::QrelsUnknownDoc,
        Issue::DuplicateQrel,
    ];

    /// The sentence a summary line starts with, including what the loader did
    /// about it, so nobody has to read the code to know which copy survived.
    pub fn describe(self) -> &'static str {
        match self {
            Issue::DuplicateDocId => "duplicate document ids (first occurrence kept)",
            Issue::DuplicateQueryId => "duplicate query ids (first occurrence kept)",
            Issue::EmptyDoc => "empty or missing document texts (kept)",
            Issue::EmptyQuery => "empty or missing query texts (kept)",
            Issue::QrelsUnknownQuery => "qrels rows naming an unknown query id (kept in qrels)",
            Issue::QrelsUnknownDoc => "qrels rows naming an unknown document id (kept in qrels)",
            Issue::DuplicateQrel => "duplicate (query-id, corpus-id) qrels rows (last score kept)",
        }
    }
}

/// Where one instance of an [`Issue`] was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub issue: Issue,
    /// The offending id (for pair files, the start of the query text).
    pub id: String,
    pub path: PathBuf,
    /// 1-based line (Parquet: row) number.
    pub line: usize,
}

/// Counts of suspicious-but-loadable input, printed as a summary; `--strict`
/// turns any non-zero count into an error.
///
/// Loading never stops for these: real BEIR data has a few of them and a user
/// should see all categories at once rather than fix them one run at a time.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    pub duplicate_doc_ids: usize,
    pub duplicate_query_ids: usize,
    pub empty_docs: usize,
    pub empty_queries: usize,
    pub qrels_unknown_query: usize,
    pub qrels_unknown_doc: usize,
    pub duplicate_qrels: usize,
    /// At most [`MAX_EXAMPLES`] per category, in the order they were found.
    pub examples: Vec<Example>,
}

impl ValidationReport {
    pub fn is_clean(&self) -> bool {
        Issue::ALL.iter().all(|&issue| self.count(issue) == 0)
    }

    pub fn count(&self, issue: Issue) -> usize {
        match issue {
            Issue::DuplicateDocId => self.duplicate_doc_ids,
            Issue::DuplicateQueryId => self.duplicate_query_ids,
            Issue::EmptyDoc => self.empty_docs,
            Issue::EmptyQuery => self.empty_queries,
            Issue::QrelsUnknownQuery => self.qrels_unknown_query,
            Issue::QrelsUnknownDoc => self.qrels_unknown_doc,
            Issue::DuplicateQrel => self.duplicate_qrels,
        }
    }

    fn count_mut(&mut self, issue: Issue) -> &mut usize {
        match issue {
            Issue::DuplicateDocId => &mut self.duplicate_doc_ids,
            Issue::DuplicateQueryId => &mut self.duplicate_query_ids,
            Issue::EmptyDoc => &mut self.empty_docs,
            Issue::EmptyQuery => &mut self.empty_queries,
            Issue::QrelsUnknownQuery => &mut self.qrels_unknown_query,
            Issue::QrelsUnknownDoc => &mut self.qrels_unknown_doc,
            Issue::DuplicateQrel => &mut self.duplicate_qrels,
        }
    }

    /// Examples recorded for one category.
    pub fn examples_of(&self, issue: Issue) -> impl Iterator<Item = &Example> {
        self.examples.iter().filter(move |e| e.issue == issue)
    }

    /// Counts one occurrence and keeps it as an example while the category
    /// has fewer than [`MAX_EXAMPLES`].
    pub fn record(&mut self, issue: Issue, id: &str, path: &Path, line: usize) {
        *self.count_mut(issue) += 1;
        if self.examples_of(issue).count() < MAX_EXAMPLES {
            self.examples.push(Example {
                issue,
                id: id.to_owned(),
                path: path.to_path_buf(),
                line,
            });
        }
    }

    /// Adds another report's counts and examples (e.g. one per shard).
    pub fn merge(&mut self, other: ValidationReport) {
        for issue in Issue::ALL {
            *self.count_mut(issue) += other.count(issue);
        }
        for example in other.examples {
            if self.examples_of(example.issue).count() < MAX_EXAMPLES {
                self.examples.push(example);
            }
        }
    }

    /// Applies [`LoadOptions::strict`]: a clean report, or any report when not
    /// strict, passes through; otherwise the whole report becomes the error.
    pub fn enforce(self, opts: LoadOptions) -> Result<Self, Error> {
        if opts.strict && !self.is_clean() {
            Err(Error::Strict {
                report: Box::new(self),
            })
        } else {
            Ok(self)
        }
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "no problems found");
        }
        let mut first = true;
        for issue in Issue::ALL {
            let count = self.count(issue);
            if count == 0 {
                continue;
            }
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{count} {}", issue.describe())?;
            let mut shown = 0;
            for example in self.examples_of(issue) {
                write!(
                    f,
                    "\n  {:?} at {}:{}",
                    example.id,
                    example.path.display(),
                    example.line
                )?;
                shown += 1;
            }
            if count > shown {
                write!(f, "\n  ... and {} more", count - shown)?;
            }
        }
        Ok(())
    }
}
