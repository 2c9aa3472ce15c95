//! Batches in which no text repeats, and the loss table of each batch.
//!
//! Like sentence-transformers' `NoDuplicatesBatchSampler`, an example joins a batch
//! only if none of its texts (query, positive, negatives) is already in it; examples
//! that do not fit wait for a later batch, so nothing is dropped. The order is a
//! seeded shuffle per epoch, recomputed from `(seed, epoch)` alone: a resumed run
//! rebuilds exactly the batches it would have seen.

use std::collections::HashSet;

use crate::data::{Example, TextId, TrainData};
use crate::loss::{Cell, CellTable, FalseNegativePolicy};

/// SplitMix64: a tiny, well-mixed, fully specified PRNG whose whole state is one u64,
/// so that a checkpoint or another implementation can reproduce it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for any n
    /// a dataset reaches).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The example indices of each batch of `epoch`, in order.
pub fn epoch_batches(
    data: &TrainData,
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..data.examples.len()).collect();
    SplitMix64(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03)).shuffle(&mut order);
    let mut batches = Vec::new();
    let mut remaining = order;
    while !remaining.is_empty() {
        let mut seen: HashSet<TextId> = HashSet::new();
        let mut batch = Vec::with_capacity(batch_size);
        let mut rest = Vec::with_capacity(remaining.len());
        for i in remaining {
            let e = &data.examples[i];
            if batch.len() < batch_size && texts(e).all(|t| !seen.contains(&t)) {
                seen.extend(texts(e));
                batch.push(i);
            } else {
                rest.push(i);
            }
        }
        batches.push(batch);
        remaining = rest;
    }
    batches
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
        let (mut false_negatives, mut identical) = (0, 0);
        for (i, e) in examples.iter().enumerate() {
            for (j, &doc) in documents.iter().enumerate() {
                let cell = &mut cells[i * m + j];
                if j == i {
                    *cell = Cell::Positive;
                } else if doc == e.positive || doc == e.query {
                    *cell = Cell::Excluded;
                    identical += 1;
                } else if (sources.known && e.known.binary_search(&doc).is_ok())
                    || (sources.judged && e.judged.contains(&doc))
                {
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
