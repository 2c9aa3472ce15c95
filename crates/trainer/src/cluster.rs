//! Spherical k-means over embeddings, for topic-clustered batches.
//!
//! Seeded k-means++ initialisation and Lloyd iterations on unit vectors (cosine
//! similarity, as the encoder scores). Assignments are one matrix product per
//! iteration; the result is a pure function of the embeddings, `k` and the seed, so a
//! resumed run rebuilds the same clusters (and the trainer also stores them).

use candle_core::{Device, Tensor};

use crate::batch::SplitMix64;
use crate::rows::normalize_rows;
use crate::Result;

/// What [`kmeans`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// Cluster of each row, `0..k`.
    pub assignment: Vec<u32>,
    /// Clusters with at least one member.
    pub k: usize,
    pub iterations: usize,
    /// Mean cosine similarity of a row to its centroid.
    pub cohesion: f64,
}

/// Clusters the `n × dim` row-major `rows` into at most `k` clusters.
pub fn kmeans(
    rows: &[f32],
    dim: usize,
    k: usize,
    max_iter: usize,
    seed: u64,
) -> Result<Clustering> {
    let n = rows.len().checked_div(dim).unwrap_or(0);
    let k = k.clamp(1, n.max(1));
    if n == 0 {
        return Ok(Clustering {
            assignment: Vec::new(),
            k: 0,
            iterations: 0,
            cohesion: 0.0,
        });
    }
    let mut x = rows[..n * dim].to_vec();
    normalize_rows(&mut x, dim);
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let dist = |a: &[f32], b: &[f32]| -> f64 {
        (1.0 - a.iter().zip(b).map(|(p, q)| p * q).sum::<f32>() as f64).max(0.0)
    };
    // k-means++: each new centre drawn with probability proportional to its distance
    // (1 − cos, a squared chord length / 2) from the nearest centre so far.
    let mut rng = SplitMix64(seed ^ 0x6B6D_6561_6E73);
    let mut centres: Vec<f32> = Vec::with_capacity(k * dim);
    let first = rng.below(n);
    centres.extend_from_slice(row(first));
    let mut nearest: Vec<f64> = (0..n).map(|i| dist(row(i), row(first))).collect();
    while centres.len() / dim < k {
        let total: f64 = nearest.iter().sum();
        let pick = if total <= 0.0 {
            rng.below(n)
        } else {
            let r = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let mut acc = 0.0;
            nearest
                .iter()
                .position(|&d| {
                    acc += d;
                    acc > r
                })
                .unwrap_or(n - 1)
        };
        let c = row(pick).to_vec();
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(dist(row(i), &c));
        }
        centres.extend_from_slice(&c);
    }
    let xt = Tensor::from_slice(&x, (n, dim), &Device::Cpu)?;
    let mut assignment = vec![u32::MAX; n];
    let mut iterations = 0;
    let mut cohesion = 0.0;
    for _ in 0..max_iter.max(1) {
        iterations += 1;
        let c = Tensor::from_slice(&centres, (k, dim), &Device::Cpu)?;
        let sims = xt.matmul(&c.t()?)?.to_vec2::<f32>()?;
        let mut changed = 0;
        let mut total = 0.0;
        let mut best_sim = vec![0f32; n];
        for (i, s) in sims.iter().enumerate() {
            let (best, sim) = s
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc },
                );
            best_sim[i] = sim;
            total += sim as f64;
            if assignment[i] != best as u32 {
                changed += 1;
                assignment[i] = best as u32;
            }
        }
        cohesion = total / n as f64;
        if changed == 0 {
            break;
        }
        // New centres: member means, renormalised; an empty cluster takes the row
        // farthest from its centre.
        let mut sums = vec![0f32; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assignment.iter().enumerate() {
            let a = a as usize;
            counts[a] += 1;
            for (s, v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(row(i)) {
                *s += v;
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| best_sim[a].total_cmp(&best_sim[b]));
        let mut spare = order.into_iter();
        for j in 0..k {
            if counts[j] == 0 {
                if let Some(i) = spare.next() {
                    sums[j * dim..(j + 1) * dim].copy_from_slice(row(i));
                }
            }
        }
        normalize_rows(&mut sums, dim);
        centres = sums;
    }
    // Renumber the non-empty clusters densely.
    let mut map = vec![u32::MAX; k];
    let mut next = 0u32;
    for a in assignment.iter_mut() {
        if map[*a as usize] == u32::MAX {
            map[*a as usize] = next;
            next += 1;
        }
        *a = map[*a as usize];
    }
    Ok(Clustering {
        assignment,
        k: next as usize,
        iterations,
        cohesion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_well_separated_groups_and_is_seeded() {
        // Three tight groups around orthogonal axes, interleaved.
        let dim = 3;
        let mut rows = Vec::new();
        for i in 0..30 {
            let mut v = vec![0.05f32 * ((i * 7 % 5) as f32 - 2.0); dim];
            v[i % 3] = 1.0;
            rows.extend(v);
        }
        let c = kmeans(&rows, dim, 3, 50, 1).unwrap();
        assert_eq!(c.k, 3);
        for i in 0..30 {
            for j in 0..30 {
                assert_eq!(
                    c.assignment[i] == c.assignment[j],
                    i % 3 == j % 3,
                    "rows {i} and {j}"
                );
            }
        }
        assert!(c.cohesion > 0.95);
        assert_eq!(c, kmeans(&rows, dim, 3, 50, 1).unwrap());
    }
}
