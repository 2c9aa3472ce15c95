//! Listwise distillation from the judge: which documents each batch query is distilled
//! over, and with what teacher scores ([`crate::loss::distillation_loss`]).
//!
//! A query's group is its positive (teacher score 1) and the first
//! [`DistillConfig::candidates`] mined candidates the judge scored for it, in rank order,
//! with their P(relevant); candidates the judge did not score are left out. Candidates
//! already among the batch's documents use their column; the others are embedded as
//! extra documents after the batch's, which the contrastive loss does not see.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::TextId;
use crate::loss::DistillGroup;

/// How the judge's scores are distilled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistillConfig {
    /// The distillation term's weight beside the contrastive loss.
    pub weight: f64,
    /// The teacher's temperature: `softmax(P(relevant) / temperature)`.
    pub temperature: f64,
    /// Scored candidates per query, best-ranked first.
    pub candidates: usize,
    /// Distillation alone, without the contrastive loss.
    pub only: bool,
}

/// The groups of a batch's queries over its `documents` (positives first: query `i`'s
/// is column `i`), and the candidates to embed after them (column `documents.len() + k`
/// for the `k`-th).
pub fn groups(
    queries: &[TextId],
    documents: &[TextId],
    teacher: &HashMap<TextId, Vec<(TextId, f32)>>,
    candidates: usize,
) -> (Vec<DistillGroup>, Vec<TextId>) {
    let mut column: HashMap<TextId, usize> = HashMap::new();
    for (j, &d) in documents.iter().enumerate() {
        column.entry(d).or_insert(j);
    }
    let mut extra = Vec::new();
    let mut out = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let Some(scored) = teacher.get(q) else {
            continue;
        };
        let positive = documents[i];
        let mut group = DistillGroup {
            query: i,
            documents: vec![i],
            teacher: vec![1.0],
        };
        for &(d, p) in scored
            .iter()
            .filter(|&&(d, _)| d != positive)
            .take(candidates)
        {
            let j = *column.entry(d).or_insert_with(|| {
                extra.push(d);
                documents.len() + extra.len() - 1
            });
            if !group.documents.contains(&j) {
                group.documents.push(j);
                group.teacher.push(p as f64);
            }
        }
        out.push(group);
    }
    (out, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch columns are reused, the rest appended once; the positive leads with
    /// teacher 1 and is never a candidate of its own query; unscored queries get no
    /// group; the candidate limit takes the best-ranked.
    #[test]
    fn groups_reuse_batch_columns_and_append_the_rest_once() {
        // Batch: queries 100, 101, 102 with positives 10, 11, 12, then negative 13.
        let queries = [100, 101, 102];
        let documents = [10, 11, 12, 13];
        let teacher = HashMap::from([
            (100, vec![(13, 0.1), (20, 0.9), (10, 0.8), (21, 0.5)]),
            (102, vec![(20, 0.7), (11, 0.2)]),
        ]);
        let (g, extra) = groups(&queries, &documents, &teacher, 3);
        assert_eq!(extra, vec![20, 21]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].query, 0);
        assert_eq!(g[0].documents, vec![0, 3, 4, 5]);
        assert_eq!(
            g[0].teacher,
            vec![1.0, 0.1f32 as f64, 0.9f32 as f64, 0.5f32 as f64]
        );
        assert_eq!(g[1].query, 2);
        assert_eq!(g[1].documents, vec![2, 4, 1]);
        let (g, extra) = groups(&queries, &documents, &teacher, 1);
        assert_eq!((g[0].documents.clone(), extra), (vec![0, 3], vec![20]));
    }
}
