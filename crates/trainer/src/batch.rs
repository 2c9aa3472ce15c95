//! Batches in which no text repeats, and the loss table of each batch.
//!
//! Like sentence-transformers' `NoDuplicatesBatchSampler`, an example joins a batch
//! only if none of its texts (query, positive, negatives) is already in it; examples
//! that do not fit wait for a later batch, so nothing is dropped. The order is a
//! seeded shuffle per epoch, recomputed from `(seed, epoch)` alone: a resumed run
//! rebuilds exactly the batches it would have seen.

use std::collections::{HashMap, HashSet};

use crate::data::{Example, TextId, TrainData};
use crate::loss::{Cell, CellTable, FalseNegativePolicy};

/// The seeded generator batches are drawn with (re-exported: one PRNG for all crates).
pub use sieve_datasets::rng::SplitMix64;

/// How examples are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Batching {
    /// A seeded shuffle (sentence-transformers' default sampler).
    #[default]
    Random,
    /// Each batch drawn from one k-means cluster of the base model's embeddings (TAS-B,
    /// CDE's contextual batches): its in-batch negatives share a topic, and so do its
    /// false negatives.
    Clustered,
}

fn epoch_rng(seed: u64, epoch: u64) -> SplitMix64 {
    SplitMix64(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The example indices of each batch of `epoch`, in order, for random batching.
///
/// Examples whose texts repeat (a question asked of several sources, a positive shared
/// by several queries) can never share a batch, so a plain first-fit leaves them for a
/// tail of tiny batches at the end of the epoch. They are placed first instead, one per
/// batch round-robin, and the rest fill the gaps; then the batch order is shuffled.
pub fn epoch_batches(
    data: &TrainData,
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let n = data.examples.len();
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let mult = multiplicities(data);
    let key = |i: usize| {
        texts(&data.examples[i])
            .map(|t| mult[&t])
            .max()
            .unwrap_or(1)
    };
    // Stable: within one multiplicity the shuffled order stands.
    order.sort_by_key(|&i| std::cmp::Reverse(key(i)));
    let mut packer = Packer::new(data, batch_size, n.div_ceil(batch_size));
    let mut cursor = 0;
    for i in order {
        cursor = packer.place_from(i, cursor) + 1;
    }
    let mut batches = packer.finish();
    rng.shuffle(&mut batches);
    batches
}

/// The batches of `epoch` for clustered batching: `clusters[i]` is example `i`'s
/// cluster. The clusters are visited in a seeded order, each one's examples shuffled,
/// and consecutive examples fill a batch, so a batch spans one cluster (two where a
/// cluster ends inside it). An example that repeats a text of the batch waits for the
/// next batch; what is left at the end goes into any batch with room, or is swapped
/// into a full batch for one of its examples that fits the last batch.
pub fn clustered_batches(
    data: &TrainData,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    clusters: &[u32],
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let n = data.examples.len();
    let mut rng = epoch_rng(seed, epoch);
    let k = clusters.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in clusters.iter().enumerate().take(n) {
        members[c as usize].push(i);
    }
    let mut visit: Vec<usize> = (0..k).collect();
    rng.shuffle(&mut visit);
    let mut stream = Vec::with_capacity(n);
    for c in visit {
        let mut m = std::mem::take(&mut members[c]);
        rng.shuffle(&mut m);
        stream.extend(m);
    }
    let mut packer = Packer::new(data, batch_size, 0);
    let mut pending: Vec<usize> = Vec::new();
    for i in stream {
        // Waiting examples go first, so they stay near their cluster.
        let mut still = Vec::new();
        for p in std::mem::take(&mut pending) {
            if !packer.try_current(p) {
                still.push(p);
            }
        }
        pending = still;
        if !packer.try_current(i) {
            pending.push(i);
        }
    }
    for p in pending {
        packer.place_anywhere(p);
    }
    packer.finish()
}

/// How many examples each text occurs in.
fn multiplicities(data: &TrainData) -> HashMap<TextId, usize> {
    let mut mult: HashMap<TextId, usize> = HashMap::new();
    for e in &data.examples {
        let mut own: Vec<TextId> = texts(e).collect();
        own.sort_unstable();
        own.dedup();
        for t in own {
            *mult.entry(t).or_default() += 1;
        }
    }
    mult
}

/// Batches under construction, each with the texts it holds.
struct Packer<'a> {
    data: &'a TrainData,
    size: usize,
    batches: Vec<(Vec<usize>, HashSet<TextId>)>,
}

impl<'a> Packer<'a> {
    fn new(data: &'a TrainData, size: usize, open: usize) -> Self {
        Self {
            data,
            size,
            batches: (0..open).map(|_| Default::default()).collect(),
        }
    }

    fn fits(&self, b: usize, i: usize) -> bool {
        let (members, seen) = &self.batches[b];
        members.len() < self.size && texts(&self.data.examples[i]).all(|t| !seen.contains(&t))
    }

    fn put(&mut self, b: usize, i: usize) {
        let e = &self.data.examples[i];
        let (members, seen) = &mut self.batches[b];
        seen.extend(texts(e));
        members.push(i);
    }

    fn open(&mut self) -> usize {
        self.batches.push(Default::default());
        self.batches.len() - 1
    }

    /// The first batch from `cursor` on (wrapping) that takes `i`, or a new one.
    fn place_from(&mut self, i: usize, cursor: usize) -> usize {
        let nb = self.batches.len();
        for step in 0..nb {
            let b = (cursor + step) % nb;
            if self.fits(b, i) {
                self.put(b, i);
                return b;
            }
        }
        let b = self.open();
        self.put(b, i);
        b
    }

    /// Adds `i` to the last batch, opening one when the last is full; `false` when it
    /// repeats a text of the last batch.
    fn try_current(&mut self, i: usize) -> bool {
        let last = match self.batches.len() {
            0 => self.open(),
            n if self.batches[n - 1].0.len() >= self.size => self.open(),
            n => n - 1,
        };
        if self.fits(last, i) {
            self.put(last, i);
            return true;
        }
        false
    }

    /// Any batch with room; else a swap with a full batch whose member fits the last
    /// batch; else a new batch.
    fn place_anywhere(&mut self, i: usize) {
        if let Some(b) = (0..self.batches.len()).find(|&b| self.fits(b, i)) {
            self.put(b, i);
            return;
        }
        if let Some(last) = self.batches.len().checked_sub(1) {
            if self.batches[last].0.len() < self.size {
                for b in 0..last {
                    // Does `i` fit `b` once member `y` leaves, and `y` fit `last`?
                    let others_ok = |y: usize, this: &Self| {
                        let seen: HashSet<TextId> = this.batches[b]
                            .0
                            .iter()
                            .filter(|&&z| z != y)
                            .flat_map(|&z| texts(&this.data.examples[z]))
                            .collect();
                        texts(&this.data.examples[i]).all(|t| !seen.contains(&t))
                    };
                    let members = self.batches[b].0.clone();
                    if let Some(&y) = members.iter().find(|&&y| {
                        let e = &self.data.examples[y];
                        texts(e).all(|t| !self.batches[last].1.contains(&t)) && others_ok(y, self)
                    }) {
                        let keep: Vec<usize> = members.into_iter().filter(|&z| z != y).collect();
                        self.batches[b] = Default::default();
                        for z in keep {
                            self.put(b, z);
                        }
                        self.put(b, i);
                        self.put(last, y);
                        return;
                    }
                }
            }
        }
        let b = self.open();
        self.put(b, i);
    }

    fn finish(self) -> Vec<Vec<usize>> {
        self.batches
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| !m.is_empty())
            .collect()
    }
}

fn texts(e: &Example) -> impl Iterator<Item = TextId> + '_ {
    [e.query, e.positive]
        .into_iter()
        .chain(e.negatives.iter().copied())
}

/// One batch laid out for the loss: query texts, then document texts (every
/// positive, then every hard negative), and how each pair enters the softmax.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub queries: Vec<TextId>,
    pub documents: Vec<TextId>,
    pub table: CellTable,
    /// Pairs taken out of or added to the softmax because the judge or the qrels say
    /// the document answers the query (not counting identical texts).
    pub false_negatives: usize,
    /// Pairs excluded because the document is the query's own positive under another
    /// example, or the query's own text.
    pub identical: usize,
    /// Per (query, document), row-major like `table`: [`crate::dose::KNOWN`] and/or
    /// [`crate::dose::JUDGED`] when the document is known to answer the query, whatever
    /// the policy does with it (the false-negative dose is measured even when nothing
    /// is masked).
    pub related: Vec<u8>,
}

/// Which knowledge marks a batch document as answering a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskSources {
    /// Other positives of the same query (qrels, repeated questions).
    pub known: bool,
    /// Candidates the judge labeled relevant.
    pub judged: bool,
}

impl Default for MaskSources {
    fn default() -> Self {
        Self {
            known: true,
            judged: true,
        }
    }
}

impl Batch {
    pub fn build(
        data: &TrainData,
        indices: &[usize],
        policy: FalseNegativePolicy,
        sources: MaskSources,
    ) -> Self {
        let examples: Vec<&Example> = indices.iter().map(|&i| &data.examples[i]).collect();
        let queries: Vec<TextId> = examples.iter().map(|e| e.query).collect();
        let mut documents: Vec<TextId> = examples.iter().map(|e| e.positive).collect();
        for e in &examples {
            documents.extend(e.negatives.iter().copied());
        }
        let (b, m) = (queries.len(), documents.len());
        let mut cells = vec![Cell::Negative; b * m];
        let mut related = vec![0u8; b * m];
        let (mut false_negatives, mut identical) = (0, 0);
        for (i, e) in examples.iter().enumerate() {
            for (j, &doc) in documents.iter().enumerate() {
                let cell = &mut cells[i * m + j];
                if j == i {
                    *cell = Cell::Positive;
                    continue;
                } else if doc == e.positive || doc == e.query {
                    *cell = Cell::Excluded;
                    identical += 1;
                    continue;
                }
                let known = e.known.binary_search(&doc).is_ok();
                let judged = e.judged.contains(&doc);
                related[i * m + j] =
                    (known as u8 * crate::dose::KNOWN) | (judged as u8 * crate::dose::JUDGED);
                if (sources.known && known) || (sources.judged && judged) {
                    match policy {
                        FalseNegativePolicy::Mask => *cell = Cell::Excluded,
                        FalseNegativePolicy::Positive => *cell = Cell::Positive,
                        FalseNegativePolicy::None => continue,
                    }
                    false_negatives += 1;
                }
            }
        }
        Batch {
            queries,
            documents,
            table: CellTable {
                queries: b,
                documents: m,
                cells,
            },
            false_negatives,
            identical,
            related,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(examples: &[(&str, &str, &[&str])]) -> TrainData {
        let mut texts: Vec<String> = Vec::new();
        let mut id = |t: &str| -> TextId {
            if let Some(i) = texts.iter().position(|x| x == t) {
                return i as TextId;
            }
            texts.push(t.into());
            (texts.len() - 1) as TextId
        };
        let examples = examples
            .iter()
            .map(|(q, p, negs)| Example {
                query: id(q),
                positive: id(p),
                negatives: negs.iter().map(|n| id(n)).collect(),
                known: vec![],
                judged: vec![],
            })
            .collect();
        TrainData::from_parts(texts, examples, "test".into())
    }

    #[test]
    fn no_text_repeats_in_a_batch_and_nothing_is_dropped() {
        // Shared positives and a negative equal to another example's positive.
        let d = data(&[
            ("q1", "A", &["B"]),
            ("q2", "B", &[]),
            ("q3", "A", &[]),
            ("q4", "C", &["A"]),
            ("q5", "D", &[]),
            ("q6", "E", &[]),
        ]);
        for epoch in 0..5 {
            let batches = epoch_batches(&d, 3, 7, epoch);
            let mut all: Vec<usize> = batches.concat();
            all.sort();
            assert_eq!(
                all,
                (0..6).collect::<Vec<_>>(),
                "every example exactly once"
            );
            for b in &batches {
                assert!(b.len() <= 3);
                let mut seen = HashSet::new();
                for &i in b {
                    for t in texts(&d.examples[i]) {
                        assert!(seen.insert(t), "text {t} repeats in batch {b:?}");
                    }
                }
            }
        }
        // Same seed and epoch, same batches; another epoch, another order.
        assert_eq!(epoch_batches(&d, 3, 7, 1), epoch_batches(&d, 3, 7, 1));
        assert_ne!(epoch_batches(&d, 6, 7, 1), epoch_batches(&d, 6, 7, 2));
    }

    fn assert_valid(d: &TrainData, batches: &[Vec<usize>], size: usize) {
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..d.examples.len()).collect::<Vec<_>>(), "each once");
        for b in batches {
            assert!(!b.is_empty() && b.len() <= size, "batch of {}", b.len());
            let mut seen = HashSet::new();
            for &i in b {
                for t in texts(&d.examples[i]) {
                    assert!(seen.insert(t), "text {t} repeats in batch {b:?}");
                }
            }
        }
    }

    /// 40 examples: one question asked 10 times (10 answers), 30 distinct ones.
    fn repeated_question() -> TrainData {
        let mut ex: Vec<(String, String)> = (0..10)
            .map(|i| ("what is x".to_string(), format!("answer {i}")))
            .collect();
        ex.extend((0..30).map(|i| (format!("question {i}"), format!("doc {i}"))));
        let owned: Vec<(&str, &str, &[&str])> = ex
            .iter()
            .map(|(q, p)| (q.as_str(), p.as_str(), &[][..]))
            .collect();
        data(&owned)
    }

    #[test]
    fn repeated_questions_are_spread_over_full_batches() {
        // A first-fit batcher puts one copy of the question per batch only as long as
        // batches last, then leaves the remaining copies for tiny batches at the end.
        let d = repeated_question();
        for epoch in 0..10 {
            let batches = epoch_batches(&d, 4, 3, epoch);
            assert_valid(&d, &batches, 4);
            assert_eq!(batches.len(), 10, "epoch {epoch}: {batches:?}");
            assert!(batches.iter().all(|b| b.len() == 4), "{batches:?}");
        }
    }

    #[test]
    fn clustered_batches_keep_clusters_together_seeded_and_valid() {
        // 40 distinct examples in four interleaved clusters of 10, batches of 5: every
        // batch is one cluster's.
        let owned: Vec<(String, String)> = (0..40)
            .map(|i| (format!("question {i}"), format!("doc {i}")))
            .collect();
        let owned: Vec<(&str, &str, &[&str])> = owned
            .iter()
            .map(|(q, p)| (q.as_str(), p.as_str(), &[][..]))
            .collect();
        let d = data(&owned);
        let clusters: Vec<u32> = (0..40).map(|i| (i % 4) as u32).collect();
        for epoch in 0..5 {
            let batches = clustered_batches(&d, 5, 9, epoch, &clusters);
            assert_valid(&d, &batches, 5);
            assert_eq!(batches.len(), 8);
            for b in &batches {
                assert!(b.iter().all(|&i| clusters[i] == clusters[b[0]]), "{b:?}");
            }
            assert_eq!(batches, clustered_batches(&d, 5, 9, epoch, &clusters));
        }
        assert_ne!(
            clustered_batches(&d, 5, 9, 0, &clusters),
            clustered_batches(&d, 5, 9, 1, &clusters)
        );
        // A question asked ten times cannot share a batch with itself: its copies
        // spill into neighbouring batches, and still nothing repeats or is lost.
        let d = repeated_question();
        let clusters: Vec<u32> = (0..40).map(|i| (i / 10) as u32).collect();
        for epoch in 0..5 {
            let batches = clustered_batches(&d, 5, 9, epoch, &clusters);
            assert_valid(&d, &batches, 5);
            assert!(batches.len() <= 10, "{batches:?}");
        }
    }

    #[test]
    fn masks_follow_the_policy() {
        let mut d = data(&[("q1", "A", &["N1"]), ("q2", "B", &["N2"])]);
        let b_id = d.examples[1].positive;
        let n2 = d.examples[1].negatives[0];
        d.examples[0].known = vec![b_id]; // B also answers q1 (qrels)
        d.examples[0].judged = vec![n2]; // the judge says N2 answers q1
        let build = |p, s| Batch::build(&d, &[0, 1], p, s);
        let mask = build(FalseNegativePolicy::Mask, MaskSources::default());
        // documents: A, B, N1, N2
        assert_eq!(mask.documents.len(), 4);
        assert_eq!(mask.table.get(0, 0), Cell::Positive);
        assert_eq!(mask.table.get(0, 1), Cell::Excluded);
        assert_eq!(mask.table.get(0, 3), Cell::Excluded);
        assert_eq!(mask.table.get(0, 2), Cell::Negative);
        assert_eq!(mask.table.get(1, 0), Cell::Negative, "masks are per query");
        assert_eq!(mask.false_negatives, 2);
        let pos = build(FalseNegativePolicy::Positive, MaskSources::default());
        assert_eq!(pos.table.get(0, 1), Cell::Positive);
        assert_eq!(pos.table.get(0, 3), Cell::Positive);
        let none = build(FalseNegativePolicy::None, MaskSources::default());
        assert_eq!(none.table.count(Cell::Excluded), 0);
        assert_eq!(none.false_negatives, 0);
        let known_only = build(
            FalseNegativePolicy::Mask,
            MaskSources {
                known: true,
                judged: false,
            },
        );
        assert_eq!(known_only.table.get(0, 1), Cell::Excluded);
        assert_eq!(known_only.table.get(0, 3), Cell::Negative);
    }

    #[test]
    fn identical_texts_are_always_masked() {
        // Two examples with the same positive can only meet when built by hand (the
        // batcher keeps them apart), but the table must still never push a query
        // away from its own answer.
        let d = data(&[("q1", "A", &[]), ("q2", "A", &[])]);
        let b = Batch::build(
            &d,
            &[0, 1],
            FalseNegativePolicy::None,
            MaskSources::default(),
        );
        assert_eq!(b.table.get(0, 1), Cell::Excluded);
        assert_eq!(b.table.get(1, 0), Cell::Excluded);
        assert_eq!(b.identical, 2);
    }
}
