//! The few non-linear pieces of a transformer, written from ops that candle can
//! differentiate.
//!
//! candle's fused `candle_nn::ops::layer_norm` and `softmax_last_dim` have no backward
//! pass: a model built on them trains nothing and reports no error. Everything here is
//! composed of primitive ops with gradients, and `tests/gradcheck.rs` proves it with
//! finite differences. Faster fused versions must keep these as their reference.

use candle_core::{Result, Tensor, D};

/// Layer normalisation over the last dimension (biased variance, as PyTorch).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Softmax over the last dimension. The row maximum is subtracted for stability and
/// detached: softmax is shift-invariant, so its gradient through the maximum is zero
/// and need not be computed.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)
}

/// GELU with the exact erf formulation (`hidden_act = "gelu"` in BERT configs), which
/// candle differentiates natively.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// Divides each row by its L2 norm, clamped at `1e-12` like `torch.nn.functional.normalize`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}
