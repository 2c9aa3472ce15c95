//! Row-major embedding matrices as the trainer's CPU code holds them.

/// Scales every `dim`-wide row of `rows` to unit length, in place, so that dot products
/// are cosines (the corpus table, k-means, the dose's whole-corpus softmax). An all-zero
/// row stays zero rather than becoming NaN.
pub fn normalize_rows(rows: &mut [f32], dim: usize) {
    for r in rows.chunks_mut(dim.max(1)) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_unit_length_and_zero_rows_stay_zero() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0, 1.0, 1.0];
        normalize_rows(&mut x, 2);
        assert_eq!(&x[..4], &[0.6, 0.8, 0.0, 0.0]);
        assert!((x[4] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
    }
}
