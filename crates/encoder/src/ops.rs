//! The non-linear pieces of a transformer, each in two forms: a fused, multithreaded CPU
//! kernel ([`crate::fused`]) and a reference built from plain candle ops.
//!
//! candle's own fused `candle_nn::ops::layer_norm` and `softmax_last_dim` have no
//! backward pass: a model built on them trains nothing and reports no error. Both forms
//! here have gradients; `tests/gradcheck.rs` proves the model's by finite differences and
//! the tests below prove the two forms equal. The public functions pick the fused kernel
//! on CPU for f32/f64 and the reference elsewhere (CUDA, Metal, half precision).

use candle_core::{DType, Result, Tensor, D};

use crate::fused;

/// Layer normalisation over the last dimension (biased variance, as PyTorch).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fused::supported(x) {
        fused::layer_norm(x, weight, bias, eps)
    } else if inference(&[x, weight, bias]) {
        // candle's one-kernel layer norm has no backward, which inference never asks for.
        candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32)
    } else {
        layer_norm_reference(x, weight, bias, eps)
    }
}

/// `layer_norm(x + residual)`, a transformer layer's residual connection and norm: in
/// one fused pass on the CPU when nothing will be differentiated (the sum is never
/// stored), else the sum and [`layer_norm`] (whose backward needs it). The four
/// tensors share one dtype (the sum of two dtypes is an error).
pub fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let same = |t: &Tensor| t.dtype() == x.dtype();
    if fused::supported(x)
        && same(residual)
        && same(weight)
        && same(bias)
        && inference(&[x, residual, weight, bias])
    {
        fused::add_layer_norm(x, residual, weight, bias, eps)
    } else {
        layer_norm(&(x + residual)?, weight, bias, eps)
    }
}

/// `gelu(x Wᵀ + b)`: under inference on the CPU the product writes `x Wᵀ` and one
/// in-place pass adds the bias and applies GELU ([`fused::linear_gelu`]); otherwise
/// [`linear`] then [`gelu_owned`].
pub fn linear_gelu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let same = |t: &Tensor| t.dtype() == x.dtype();
    if fused::supported(x) && same(weight) && same(bias) && inference(&[x, weight, bias]) {
        fused::linear_gelu(x, weight, bias)
    } else {
        gelu_owned(linear(x, weight, bias)?)
    }
}

/// `layer_norm(x Wᵀ + b + residual)`, a transformer layer's output projection,
/// residual connection and norm: under inference on the CPU the linear's bias and the
/// residual are added in the norm's row pass ([`fused::linear_add_layer_norm`]);
/// otherwise [`linear`] then [`add_layer_norm`]. One dtype for all.
#[allow(clippy::too_many_arguments)]
pub fn linear_add_layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    norm_weight: &Tensor,
    norm_bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let all = [x, weight, bias, residual, norm_weight, norm_bias];
    if fused::supported(x) && all.iter().all(|t| t.dtype() == x.dtype()) && inference(&all) {
        fused::linear_add_layer_norm(x, weight, bias, residual, norm_weight, norm_bias, eps)
    } else {
        add_layer_norm(
            &linear(x, weight, bias)?,
            residual,
            norm_weight,
            norm_bias,
            eps,
        )
    }
}

/// No input is a variable or depends on one: nothing will be differentiated, so the
/// fused candle kernels without a backward (one launch instead of nine on a GPU) may run.
fn inference(xs: &[&Tensor]) -> bool {
    xs.iter().all(|x| !x.track_op())
}

pub fn layer_norm_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// `x Wᵀ + b` for a 2-D `x`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fused::supported(x) {
        fused::linear(x, weight, bias)
    } else {
        linear_reference(x, weight, bias)
    }
}

pub fn linear_reference(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.matmul(&weight.t()?)?.broadcast_add(bias)
}

/// Softmax over the last dimension. The row maximum is subtracted for stability and
/// detached: softmax is shift-invariant, so its gradient through the maximum is zero
/// and need not be computed.
pub fn softmax_reference(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)
}

/// GELU with the exact erf formulation (`hidden_act = "gelu"` in BERT configs).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused::supported(x) {
        fused::gelu(x)
    } else {
        x.gelu_erf()
    }
}

/// [`gelu`] of a tensor nothing else holds (a linear layer's fresh output): under
/// inference on the CPU it is computed over `x`'s own buffer, saving the allocation and
/// first write of the model's largest activation; otherwise as [`gelu`].
pub(crate) fn gelu_owned(x: Tensor) -> Result<Tensor> {
    if fused::supported(&x) && inference(&[&x]) {
        fused::gelu_in_place(x)
    } else {
        gelu(&x)
    }
}

pub fn gelu_reference(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// Multi-head self-attention: `qkv` is `(batch * seq, 3 * hidden)` (Q, K, V side by
/// side, as one linear layer makes them), `mask` `(batch, seq)` with 1 for tokens and 0
/// for padding. Returns `(batch * seq, hidden)`.
pub fn attention(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    if fused::supported(qkv) {
        fused::attention(qkv, mask, heads)
    } else {
        attention_reference(qkv, mask, heads)
    }
}

/// Attention over packed sequences (no padding; see [`crate::model::Packed`]): only the
/// fused CPU kernel has this form. `qkv` is `(Σ lens, 3 * hidden)`.
pub fn attention_packed(qkv: &Tensor, lens: &[usize], heads: usize) -> Result<Tensor> {
    if !fused::supported(qkv) {
        candle_core::bail!(
            "packed attention runs on the CPU in f32/f64 only, not {:?} on {:?}",
            qkv.dtype(),
            qkv.device()
        );
    }
    fused::attention_packed(qkv, lens, heads)
}

pub fn attention_reference(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, seq) = mask.dims2()?;
    let (rows, width) = qkv.dims2()?;
    let hidden = width / 3;
    let head_dim = hidden / heads;
    // Built in f32 and then cast: in f16, 0 · (−1e9 rounded to −inf) would be NaN.
    let mask = mask.to_dtype(DType::F32)?;
    let bias = ((mask.ones_like()? - &mask)? * crate::model::MASK_VALUE)?
        .to_dtype(qkv.dtype())?
        .reshape((batch, 1, 1, seq))?;
    let split = qkv
        .reshape((batch, seq, 3, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let (q, k, v) = (split.get(0)?, split.get(1)?, split.get(2)?);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
    // In half precision the softmax runs in f32 (as under PyTorch's autocast).
    let softmax = |x: &Tensor| {
        if inference(&[x]) {
            candle_nn::ops::softmax_last_dim(x)
        } else {
            softmax_reference(x)
        }
    };
    let probs = match scores.dtype() {
        DType::BF16 | DType::F16 => {
            softmax(&scores.to_dtype(DType::F32)?.contiguous()?)?.to_dtype(scores.dtype())?
        }
        _ => softmax(&scores.contiguous()?)?,
    };
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, hidden))
}

/// Divides each row by its L2 norm, clamped at `1e-12` like `torch.nn.functional.normalize`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    //! Fused kernels against the plain-op references: values in f32 and f64, gradients
    //! against the references' gradients and against finite differences in f64.

    use super::*;
    use candle_core::{Device, Var};

    /// Normal samples from a fixed seed (xorshift + Box–Muller), so that a failure
    /// reproduces; `shift` also varies the seed.
    fn randn(shape: &[usize], dtype: DType, shift: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64) ^ shift.to_bits();
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let data: Vec<f64> = (0..n)
            .map(|_| {
                let (u1, u2) = (uniform(), uniform());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() + shift
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    fn mask() -> Tensor {
        Tensor::new(
            &[[1f64, 1., 1., 1., 1.], [1., 1., 0., 0., 0.]],
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Gradient of `sum(f(x) * probe)` w.r.t. each input, by autograd.
    fn grads(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Var], probe: &Tensor) -> Vec<Tensor> {
        let ts: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = (f(&ts) * probe).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        inputs.iter().map(|v| g.get(v).unwrap().clone()).collect()
    }

    /// Fused and reference agree on values (f32, f64) and gradients (f64), and the
    /// fused gradient matches central finite differences on sampled entries.
    fn check(
        fused_f: &dyn Fn(&[Tensor]) -> Tensor,
        ref_f: &dyn Fn(&[Tensor]) -> Tensor,
        shapes: &[&[usize]],
    ) {
        for dtype in [DType::F32, DType::F64] {
            let xs: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| randn(s, dtype, 0.1 * i as f64))
                .collect();
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            let d = max_abs_diff(&fused_f(&xs), &ref_f(&xs));
            assert!(d < tol, "{dtype:?} values differ by {d}");
        }
        let vars: Vec<Var> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| Var::from_tensor(&randn(s, DType::F64, 0.1 * i as f64)).unwrap())
            .collect();
        let out_shape = fused_f(
            &vars
                .iter()
                .map(|v| v.as_tensor().clone())
                .collect::<Vec<_>>(),
        )
        .shape()
        .clone();
        let probe = randn(out_shape.dims(), DType::F64, 7.0)
            .affine(1.0, -7.0)
            .unwrap();
        let gf = grads(fused_f, &vars, &probe);
        let gr = grads(ref_f, &vars, &probe);
        for (i, (a, b)) in gf.iter().zip(&gr).enumerate() {
            let d = max_abs_diff(a, b);
            // candle's erf-GELU backward differs from the exact derivative by ~1e-7;
            // the finite differences below are the stricter check.
            assert!(
                d < 1e-6,
                "input {i}: fused and reference gradients differ by {d}"
            );
        }
        let eps = 1e-6;
        for (vi, var) in vars.iter().enumerate() {
            let orig: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
            let g: Vec<f64> = gf[vi].flatten_all().unwrap().to_vec1().unwrap();
            for idx in [0, orig.len() / 3, orig.len() - 1] {
                let eval = |delta: f64| {
                    let mut d = orig.clone();
                    d[idx] += delta;
                    var.set(&Tensor::from_vec(d, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
                    (fused_f(&ts) * &probe)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
                var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                assert!(
                    (fd - g[idx]).abs() < 1e-6 * (1.0 + g[idx].abs()),
                    "input {vi}[{idx}]: gradient {} vs finite difference {fd}",
                    g[idx]
                );
            }
        }
    }

    #[test]
    fn fused_layer_norm_matches_reference() {
        check(
            &|x| fused::layer_norm(&x[0], &x[1], &x[2], 1e-12).unwrap(),
            &|x| layer_norm_reference(&x[0], &x[1], &x[2], 1e-12).unwrap(),
            // 40 rows: several rayon tasks, so the dw/db partial sums are reduced.
            &[&[40, 6], &[6], &[6]],
        );
        // Rows longer than the 8 reduction lanes, with a remainder.
        check(
            &|x| fused::layer_norm(&x[0], &x[1], &x[2], 1e-12).unwrap(),
            &|x| layer_norm_reference(&x[0], &x[1], &x[2], 1e-12).unwrap(),
            &[&[21, 19], &[19], &[19]],
        );
    }

    /// The inference-only fused kernels (no backward) against the references, in f32 and
    /// f64: `layer_norm(x + r)` in one pass, with rows split over several tasks and rows
    /// longer than the reduction lanes; GELU in place, on a view that starts inside its
    /// storage, leaving the storage outside the view as it was. And the public
    /// functions keep gradients when an input is a variable.
    #[test]
    fn fused_inference_kernels_match_reference() {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            for (rows, dim) in [(40, 6), (21, 19)] {
                let x = randn(&[rows, dim], dtype, 0.0);
                let r = randn(&[rows, dim], dtype, 0.3);
                let (w, b) = (randn(&[dim], dtype, 1.0), randn(&[dim], dtype, 0.1));
                let fused = fused::add_layer_norm(&x, &r, &w, &b, 1e-12).unwrap();
                let reference = layer_norm_reference(&(&x + &r).unwrap(), &w, &b, 1e-12).unwrap();
                let d = max_abs_diff(&fused, &reference);
                assert!(d < tol, "add + layer norm {rows}×{dim} {dtype:?}: {d}");
                assert!(
                    add_layer_norm(&x, &r.narrow(0, 1, rows - 1).unwrap(), &w, &b, 1e-12).is_err()
                );
                // A weight and bias of the wrong lengths, even summing to 2 × dim.
                let long = randn(&[dim + 1], dtype, 0.0);
                let short = randn(&[dim - 1], dtype, 0.0);
                assert!(fused::add_layer_norm(&x, &r, &long, &short, 1e-12).is_err());
            }
            // The linear layer whose bias its consumer adds: GELU in place, and the
            // norm's row pass with the residual. One row; a depth of 2 (the crate's
            // vector-vector path); a depth of 600 (split in depth chunks, the later
            // ones reading what the first wrote); 1000 × 600 × 9 (several row blocks
            // on more than one thread, several GELU tasks, rows not dividing a task).
            for (rows, inp, out) in [(5, 3, 4), (1, 600, 9), (7, 2, 5), (1000, 600, 9)] {
                let x = randn(&[rows, inp], dtype, 0.0);
                let w = randn(&[out, inp], dtype, 0.2);
                let b = randn(&[out], dtype, 0.4);
                let r = randn(&[rows, out], dtype, 0.6);
                let (nw, nb) = (randn(&[out], dtype, 1.0), randn(&[out], dtype, 0.1));
                let lin = linear_reference(&x, &w, &b).unwrap();
                let d = max_abs_diff(
                    &fused::linear_gelu(&x, &w, &b).unwrap(),
                    &gelu_reference(&lin).unwrap(),
                );
                assert!(d < tol, "linear + gelu {rows}×{out} {dtype:?}: {d}");
                let d = max_abs_diff(
                    &fused::linear_add_layer_norm(&x, &w, &b, &r, &nw, &nb, 1e-12).unwrap(),
                    &layer_norm_reference(&(&lin + &r).unwrap(), &nw, &nb, 1e-12).unwrap(),
                );
                assert!(
                    d < tol,
                    "linear + add + layer norm {rows}×{out} {dtype:?}: {d}"
                );
            }
            let base = randn(&[6, 9], dtype, 0.0);
            // A copy: in f64 `to_dtype` would share the storage being overwritten.
            let before = base.to_dtype(DType::F64).unwrap().copy().unwrap();
            let view = base.narrow(0, 2, 3).unwrap();
            let expected = gelu_reference(&view).unwrap();
            let got = fused::gelu_in_place(view).unwrap();
            let d = max_abs_diff(&got, &expected);
            assert!(d < tol, "gelu in place {dtype:?}: {d}");
            let after = base.to_dtype(DType::F64).unwrap();
            for keep in [(0, 2), (5, 1)] {
                let d = max_abs_diff(
                    &before.narrow(0, keep.0, keep.1).unwrap(),
                    &after.narrow(0, keep.0, keep.1).unwrap(),
                );
                assert_eq!(d, 0.0, "gelu in place wrote outside its view");
            }
            assert!(
                max_abs_diff(
                    &after.narrow(0, 2, 3).unwrap(),
                    &expected.to_dtype(DType::F64).unwrap()
                ) < tol
            );
        }
        // With a variable among the inputs the public functions take the differentiable
        // path: the gradients exist and equal the reference's.
        let x = Var::from_tensor(&randn(&[5, 7], DType::F64, 0.0)).unwrap();
        let r = randn(&[5, 7], DType::F64, 0.2);
        let (w, b) = (randn(&[7], DType::F64, 1.0), randn(&[7], DType::F64, 0.0));
        let probe = randn(&[5, 7], DType::F64, 0.0);
        let g = |f: &dyn Fn(&Tensor) -> Tensor| {
            let loss = (f(x.as_tensor()) * &probe).unwrap().sum_all().unwrap();
            loss.backward().unwrap().get(&x).unwrap().clone()
        };
        let fused_g = g(&|x| gelu_owned(add_layer_norm(x, &r, &w, &b, 1e-12).unwrap()).unwrap());
        // And through the linear-fused forms, a variable as the linear's input.
        let lw = randn(&[7, 7], DType::F64, 0.3);
        let lb = randn(&[7], DType::F64, 0.5);
        let fused_lin = g(&|x| {
            let h = linear_add_layer_norm(x, &lw, &lb, &r, &w, &b, 1e-12).unwrap();
            linear_gelu(&h, &lw, &lb).unwrap()
        });
        let ref_lin = g(&|x| {
            let h = layer_norm_reference(
                &(linear_reference(x, &lw, &lb).unwrap() + &r).unwrap(),
                &w,
                &b,
                1e-12,
            )
            .unwrap();
            gelu_reference(&linear_reference(&h, &lw, &lb).unwrap()).unwrap()
        });
        // candle's GELU backward (~1e-7 off, as above), here through a second linear
        // layer: relative to the gradient's size.
        let d = max_abs_diff(&fused_lin, &ref_lin);
        let size = max_abs_diff(&ref_lin, &ref_lin.zeros_like().unwrap());
        assert!(
            d < 1e-6 * (1.0 + size),
            "gradient through the linear-fused forms: {d} (size {size})"
        );
        let ref_g = g(&|x| {
            gelu_reference(&layer_norm_reference(&(x + &r).unwrap(), &w, &b, 1e-12).unwrap())
                .unwrap()
        });
        let d = max_abs_diff(&fused_g, &ref_g);
        // As in `check`: candle's erf-GELU backward is ~1e-7 from the exact derivative.
        assert!(
            d < 1e-6,
            "gradient through add_layer_norm and gelu_owned: {d}"
        );
    }

    #[test]
    fn fused_linear_matches_reference() {
        check(
            &|x| fused::linear(&x[0], &x[1], &x[2]).unwrap(),
            &|x| linear_reference(&x[0], &x[1], &x[2]).unwrap(),
            &[&[7, 5], &[4, 5], &[4]],
        );
        // Enough rows and outputs to split into several row and feature blocks.
        check(
            &|x| fused::linear(&x[0], &x[1], &x[2]).unwrap(),
            &|x| linear_reference(&x[0], &x[1], &x[2]).unwrap(),
            &[&[37, 19], &[11, 19], &[11]],
        );
    }

    #[test]
    fn fused_gelu_matches_reference() {
        check(
            &|x| fused::gelu(&(&x[0] * 2.0).unwrap()).unwrap(),
            &|x| gelu_reference(&(&x[0] * 2.0).unwrap()).unwrap(),
            &[&[5, 9]],
        );
    }

    #[test]
    fn fused_attention_matches_reference() {
        // batch 2 × seq 5, hidden 8 with 2 heads; the second sequence is padded.
        check(
            &|x| fused::attention(&x[0], &mask().to_dtype(x[0].dtype()).unwrap(), 2).unwrap(),
            &|x| attention_reference(&x[0], &mask().to_dtype(x[0].dtype()).unwrap(), 2).unwrap(),
            &[&[10, 24]],
        );
    }

    #[test]
    fn fused_attention_matches_reference_with_holes_and_empty_rows() {
        // Sequences of 11 (longer than the 8 reduction lanes): full, a hole inside plus
        // trailing padding (the kernel stops at the last real key), and fully masked.
        let mask = || {
            let full = [1f64; 11];
            let holed = [1f64, 1., 0., 1., 1., 1., 0., 0., 0., 0., 0.];
            Tensor::new(&[full, holed, [0f64; 11]], &Device::Cpu).unwrap()
        };
        check(
            &|x| fused::attention(&x[0], &mask().to_dtype(x[0].dtype()).unwrap(), 2).unwrap(),
            &|x| attention_reference(&x[0], &mask().to_dtype(x[0].dtype()).unwrap(), 2).unwrap(),
            &[&[33, 48]],
        );
    }

    #[test]
    fn fused_attention_packed_matches_the_padded_reference() {
        // Lengths 11 (past the 8 reduction lanes), 1 and 4 back to back (16 rows); the
        // reference scatters them into a padded 3 × 11 batch (zero rows at padding),
        // runs masked attention and gathers the real rows back: index_select on both
        // sides, so its gradient is the padded path's.
        let lens = [11usize, 1, 4];
        let seq = 11;
        let padded_mask = || {
            let rows: Vec<Vec<f64>> = lens
                .iter()
                .map(|&n| (0..seq).map(|i| f64::from(u8::from(i < n))).collect())
                .collect();
            Tensor::new(rows, &Device::Cpu).unwrap()
        };
        let total: usize = lens.iter().sum();
        // Row of the padded batch -> row of packed ∪ {a zero row at `total`}.
        let mut scatter = Vec::new();
        let mut gather = Vec::new();
        let mut offset = 0;
        for (b, &n) in lens.iter().enumerate() {
            for i in 0..seq {
                scatter.push(if i < n {
                    (offset + i) as u32
                } else {
                    total as u32
                });
            }
            gather.extend((0..n).map(|i| (b * seq + i) as u32));
            offset += n;
        }
        let reference = |x: &[Tensor]| {
            let zero = x[0].narrow(0, 0, 1).unwrap().zeros_like().unwrap();
            let with_zero = Tensor::cat(&[&x[0], &zero], 0).unwrap();
            let idx = Tensor::new(scatter.as_slice(), &Device::Cpu).unwrap();
            let padded = with_zero.index_select(&idx, 0).unwrap();
            let mask = padded_mask().to_dtype(x[0].dtype()).unwrap();
            let out = attention_reference(&padded, &mask, 2).unwrap();
            let idx = Tensor::new(gather.as_slice(), &Device::Cpu).unwrap();
            out.index_select(&idx, 0).unwrap()
        };
        check(
            &|x| fused::attention_packed(&x[0], &lens, 2).unwrap(),
            &reference,
            &[&[total, 24]],
        );
        // A length list that does not add up to the rows is an error, not a read past
        // the end.
        let x = randn(&[total, 24], DType::F32, 0.0);
        let err = fused::attention_packed(&x, &[11, 1, 5], 2).unwrap_err();
        assert!(err.to_string().contains("packed sequences 17"), "{err}");
    }

    #[test]
    fn padding_keys_get_no_attention() {
        // Changing K/V of padded positions must not change any output row of sequence 2.
        let x = randn(&[10, 24], DType::F64, 0.0);
        let m = mask();
        let a = fused::attention(&x, &m, 2).unwrap();
        let mut data: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        for row in 7..10 {
            for c in 8..24 {
                data[row * 24 + c] += 5.0;
            }
        }
        let x2 = Tensor::from_vec(data, (10, 24), &Device::Cpu).unwrap();
        let b = fused::attention(&x2, &m, 2).unwrap();
        let d = max_abs_diff(&a.narrow(0, 5, 2).unwrap(), &b.narrow(0, 5, 2).unwrap());
        assert!(d < 1e-12, "padding leaked into attention: {d}");
    }

    /// The kernels' checks above run on the CPU's widest vectors; this reruns them in
    /// a child test process with each narrower path forced (`SIEVE_CPU_ISA`), so every
    /// instance [`crate::fused::simd::dispatch`] can choose is checked against the
    /// reference on a machine that has them all (the seven `fused_` checks).
    #[test]
    fn every_isa_passes_the_kernel_checks() {
        let exe = std::env::current_exe().unwrap();
        for isa in ["avx2", "baseline"] {
            let out = std::process::Command::new(&exe)
                .args(["ops::tests::fused_", "--test-threads", "1"])
                .env("SIEVE_CPU_ISA", isa)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "SIEVE_CPU_ISA={isa}:\n{text}");
            assert!(
                text.contains("test result: ok. 7 passed"),
                "SIEVE_CPU_ISA={isa} ran other than the 7 kernel checks:\n{text}"
            );
        }
    }
}
