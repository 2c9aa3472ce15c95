//! Fused CPU kernels with their own backward, for the hot spots of the forward pass.
//!
//! candle's element-wise CPU ops run on one thread and allocate a tensor per step; a
//! layer norm built from them is eight passes over memory, attention a dozen tensors of
//! `batch × heads × seq × seq`. These ops do each job in one multithreaded pass (rayon)
//! and attention per (sequence, head) with scores that never leave the cache.
//!
//! Every backward is a fused kernel too (`*GradOp`: layer norm, GELU, attention with
//! its probabilities recomputed per (sequence, head), linear with dx, dW and db in one
//! pass), since candle's generic backward of the plain ops was most of a training step.
//!
//! Each kernel is written once, generic in the float type ([`Real`]: f32 and f64);
//! `map1`/`map2`/`map3` dispatch the storage's dtype once for all of them, as candle's
//! own `cpu_backend::utils::Map1/Map2/Map3` do. Each forward is checked against the
//! plain-op reference in [`crate::ops`] for values, and each backward by finite
//! differences in f64 (`tests` below and `tests/gradcheck.rs`).

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape,
    Tensor, WithDType, D,
};
use rayon::prelude::*;
use std::sync::Arc;

/// Rows handed to one rayon task in row-wise kernels: enough work to amortise the task.
const ROWS_PER_TASK: usize = 16;

/// Scalar operations the kernels need, for f32 and f64.
pub trait Real: WithDType + num_traits::Float {
    fn erf(self) -> Self;
    /// `exp`, inlined so that loops over rows vectorise (libm's `expf` is an opaque
    /// call per element and was 10% of a forward).
    fn exp_fast(self) -> Self;
    /// `erf(self)` given `e = exp(-self²)`, which GELU's backward needs anyway for the
    /// density: one `exp` per element instead of two. The default ignores `e`.
    #[inline(always)]
    fn erf_given_exp(self, _e: Self) -> Self {
        self.erf()
    }
}
impl Real for f32 {
    /// Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7, below f32's resolution of
    /// GELU's output): one `exp` instead of libm's `erff`, which was 11% of a forward.
    #[inline(always)]
    fn erf(self) -> Self {
        self.erf_given_exp((-self * self).exp_fast())
    }

    /// A&S 7.1.26 is `1 - poly(t) exp(-x²)`: the exponential is the caller's.
    #[inline(always)]
    fn erf_given_exp(self, e: Self) -> Self {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [
            0.254_829_6,
            -0.284_496_72,
            1.421_413_8,
            -1.453_152,
            1.061_405_4,
        ];
        let x = self.abs();
        let t = 1.0 / (1.0 + P * x);
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        let y = 1.0 - poly * e;
        y.copysign(self)
    }

    /// Cephes `expf`: range reduction by ln 2 and a degree-6 polynomial, within 2 ulp;
    /// inputs below the smallest normal result give 0 (masked attention scores).
    #[inline(always)]
    fn exp_fast(self) -> Self {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const P: [f32; 6] = [
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ];
        const MIN: f32 = -87.336_55;
        const MAX: f32 = 88.376_26;
        let x = self.clamp(MIN, MAX);
        // Round to nearest by the 1.5·2²³ trick: `round()` is a libm call, not inlined.
        const ROUND: f32 = 12_582_912.0;
        let t = x * LOG2E + ROUND;
        let n = t - ROUND;
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = ((((P[0] * r + P[1]) * r + P[2]) * r + P[3]) * r + P[4]) * r + P[5];
        let y = p * r * r + r + 1.0;
        // n as an integer, read from t's mantissa: `n as i32` is a saturating cast that
        // compiles to a scalar convert per element and stopped the loops vectorising.
        // |n| ≤ 127 after the clamp, so the exponent field stays in 1..=254.
        let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
        let scale = f32::from_bits(((ni + 127) as u32) << 23);
        if self < MIN {
            0.0
        } else {
            y * scale
        }
    }
}
impl Real for f64 {
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

fn contiguous<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Whether the fused kernels can run on `t` (CPU, f32 or f64).
/// A kernel over one contiguous input, generic in the float type. [`map1`] dispatches
/// the dtype once for every kernel, as candle's `cpu_backend::utils::Map1` does.
trait Map1 {
    const NAME: &'static str;
    fn f<T: Real>(&self, a: &[T], la: &Layout) -> Result<Vec<T>>;
}

/// [`Map1`] for two inputs of one dtype.
trait Map2 {
    const NAME: &'static str;
    fn f<T: Real>(&self, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Result<Vec<T>>;
}

/// [`Map1`] for three inputs of one dtype.
trait Map3 {
    const NAME: &'static str;
    #[allow(clippy::too_many_arguments)]
    fn f<T: Real>(
        &self,
        a: &[T],
        la: &Layout,
        b: &[T],
        lb: &Layout,
        c: &[T],
        lc: &Layout,
    ) -> Result<Vec<T>>;
}

/// Runs `m` on the storage's dtype (f32 or f64; others are an error naming the op).
fn map1<M: Map1>(m: &M, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    Ok(match s.dtype() {
        DType::F32 => f32::to_cpu_storage_owned(m.f(contiguous::<f32>(s, l, M::NAME)?, l)?),
        DType::F64 => f64::to_cpu_storage_owned(m.f(contiguous::<f64>(s, l, M::NAME)?, l)?),
        dt => candle_core::bail!("{}: unsupported dtype {dt:?}", M::NAME),
    })
}

fn map2<M: Map2>(
    m: &M,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<CpuStorage> {
    fn go<T: Real, M: Map2>(
        m: &M,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<Vec<T>> {
        m.f(
            contiguous::<T>(s1, l1, M::NAME)?,
            l1,
            contiguous::<T>(s2, l2, M::NAME)?,
            l2,
        )
    }
    Ok(match s1.dtype() {
        DType::F32 => f32::to_cpu_storage_owned(go::<f32, M>(m, s1, l1, s2, l2)?),
        DType::F64 => f64::to_cpu_storage_owned(go::<f64, M>(m, s1, l1, s2, l2)?),
        dt => candle_core::bail!("{}: unsupported dtype {dt:?}", M::NAME),
    })
}

#[allow(clippy::too_many_arguments)]
fn map3<M: Map3>(
    m: &M,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<CpuStorage> {
    #[allow(clippy::too_many_arguments)]
    fn go<T: Real, M: Map3>(
        m: &M,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<Vec<T>> {
        m.f(
            contiguous::<T>(s1, l1, M::NAME)?,
            l1,
            contiguous::<T>(s2, l2, M::NAME)?,
            l2,
            contiguous::<T>(s3, l3, M::NAME)?,
            l3,
        )
    }
    Ok(match s1.dtype() {
        DType::F32 => f32::to_cpu_storage_owned(go::<f32, M>(m, s1, l1, s2, l2, s3, l3)?),
        DType::F64 => f64::to_cpu_storage_owned(go::<f64, M>(m, s1, l1, s2, l2, s3, l3)?),
        dt => candle_core::bail!("{}: unsupported dtype {dt:?}", M::NAME),
    })
}

/// The last dimension of a layout (1 for a scalar).
fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

pub fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Runs kernels compiled for the widest vectors the CPU has: AVX-512 (F) or AVX2+FMA,
/// detected at run time. The crates are built for baseline x86-64 (SSE2) so the binary
/// runs anywhere; this recovers the wide vectors for the element-wise loops without
/// `-C target-cpu=native`. The one place where sieve's CPU kernels choose an ISA (the
/// trainer's AdamW and exact-softmax passes use it too).
pub mod simd {
    /// The vector extension [`dispatch`] runs kernels with on this CPU.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Isa {
        Avx512,
        Avx2,
        Baseline,
    }

    /// What the CPU has, capped by `SIEVE_CPU_ISA` (`avx2` or `baseline`; as
    /// `MKL_ENABLE_INSTRUCTIONS` caps MKL) so that one binary can be measured on each
    /// path, or a CPU that clocks down under AVX-512 kept on AVX2. Read once. The
    /// matrix products (the `gemm` crate) choose their own kernels and ignore it.
    #[inline(always)]
    pub fn isa() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let detected = detect();
            match std::env::var("SIEVE_CPU_ISA").as_deref() {
                Ok("baseline") => Isa::Baseline,
                Ok("avx2") if detected == Isa::Avx512 => Isa::Avx2,
                _ => detected,
            }
        })
    }

    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }

    /// Runs `f` inlined into a function compiled for [`isa`].
    #[inline(always)]
    pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            match isa() {
                // SAFETY: the features were just detected on this CPU.
                Isa::Avx512 => return unsafe { avx512(f) },
                // SAFETY: as above.
                Isa::Avx2 => return unsafe { avx2(f) },
                Isa::Baseline => {}
            }
        }
        f()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// A closure is not always inlined into [`dispatch`]'s instances; the hottest loop
    /// (the attention softmax) gets dedicated instances of its own.
    pub fn softmax_rows<T: super::Real>(scores: &mut [T], bias: &[T], seq: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            match isa() {
                // SAFETY: the features were just detected on this CPU.
                Isa::Avx512 => return unsafe { softmax_rows_avx512(scores, bias, seq) },
                // SAFETY: as above.
                Isa::Avx2 => return unsafe { softmax_rows_avx2(scores, bias, seq) },
                Isa::Baseline => {}
            }
        }
        super::softmax_rows(scores, bias, seq)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn softmax_rows_avx512<T: super::Real>(scores: &mut [T], bias: &[T], seq: usize) {
        super::softmax_rows(scores, bias, seq)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_rows_avx2<T: super::Real>(scores: &mut [T], bias: &[T], seq: usize) {
        super::softmax_rows(scores, bias, seq)
    }
}

/// Folds `x` with `f` over eight independent lanes. A plain `fold` over floats is a
/// serial dependency chain that the compiler may not reorder, so it never vectorises;
/// eight lanes map onto one AVX2 register and keep the FMA pipes busy.
#[inline(always)]
fn fold8<T: Real>(x: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let mut r = init;
    for a in acc {
        r = f(r, a);
    }
    chunks.remainder().iter().fold(r, |a, &v| f(a, v))
}

#[inline(always)]
fn sum<T: Real>(x: &[T]) -> T {
    fold8(x, T::zero(), |a, b| a + b)
}

/// `Σ (x - mean)²`, in lanes like [`fold8`].
#[inline(always)]
fn sum_sq_dev<T: Real>(x: &[T], mean: T) -> T {
    let mut acc = [T::zero(); 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let r = acc.iter().fold(T::zero(), |a, &b| a + b);
    chunks
        .remainder()
        .iter()
        .fold(r, |a, &v| a + (v - mean) * (v - mean))
}

/// `Σ a·b`, in lanes like [`fold8`].
#[inline(always)]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let r = acc.iter().fold(T::zero(), |a, &b| a + b);
    ca.remainder()
        .iter()
        .zip(cb.remainder())
        .fold(r, |s, (&x, &y)| s + x * y)
}

/// Masked softmax of each `seq`-long row of `scores`, in place; `bias` is added first.
/// Separate simple loops so that each vectorises.
#[inline(always)]
fn softmax_rows<T: Real>(scores: &mut [T], bias: &[T], seq: usize) {
    for row in scores.chunks_mut(seq) {
        for (s, &b) in row.iter_mut().zip(bias) {
            *s += b;
        }
        let max = fold8(row, T::neg_infinity(), |a, b| if b > a { b } else { a });
        for s in row.iter_mut() {
            *s = (*s - max).exp_fast();
        }
        let inv = T::one() / sum(row);
        row.iter_mut().for_each(|s| *s *= inv);
    }
}

/// Keys past the last unmasked one (right padding) get softmax weight exactly zero, so
/// the attention products stop there; a fully masked row keeps all keys, as the
/// reference does.
fn valid_keys<T: Real>(mask: &[T]) -> usize {
    mask.iter()
        .rposition(|&keep| keep != T::zero())
        .map_or(mask.len(), |p| p + 1)
}

// ---------------------------------------------------------------- layer norm

struct LayerNormOp {
    eps: f64,
}

impl LayerNormOp {
    /// Layer norm of `x`, or of `x + residual` when `residual` is not empty (same length
    /// as `x`): the sum is formed one row at a time in a row buffer, so the residual add
    /// costs no pass of its own over the activations.
    fn fwd<T: Real>(&self, x: &[T], residual: &[T], w: &[T], b: &[T], dim: usize) -> Vec<T> {
        self.fwd_biased(x, &[], residual, w, b, dim)
    }

    /// [`Self::fwd`] of `(x + row_bias) + residual` when `row_bias` (`dim` long) is not
    /// empty: a linear layer's bias, added in the order its product would have.
    fn fwd_biased<T: Real>(
        &self,
        x: &[T],
        row_bias: &[T],
        residual: &[T],
        w: &[T],
        b: &[T],
        dim: usize,
    ) -> Vec<T> {
        debug_assert!(
            row_bias.is_empty() || !residual.is_empty(),
            "a row bias comes with a residual"
        );
        // Written whole by the tasks, so not zeroed first: a zeroing `vec!` was a
        // single-threaded memset of every activation before each layer norm, 4% of a
        // forward with the other core idle.
        let mut out = Vec::with_capacity(x.len());
        let eps = T::from_f64(self.eps);
        let n = T::from_f64(dim as f64);
        let d = dim.max(1);
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .enumerate()
            .for_each(|(task, (o, x))| {
                let residual = (!residual.is_empty())
                    .then(|| &residual[task * d * ROWS_PER_TASK..][..x.len()]);
                let mut row = vec![T::zero(); if residual.is_some() { dim } else { 0 }];
                simd::dispatch(|| {
                    for (j, (o, x)) in o.chunks_mut(d).zip(x.chunks(d)).enumerate() {
                        let x: &[T] = match residual {
                            Some(r) if row_bias.is_empty() => {
                                for ((s, &a), &b) in row.iter_mut().zip(x).zip(&r[j * d..]) {
                                    *s = a + b;
                                }
                                &row
                            }
                            Some(r) => {
                                for (((s, &a), &c), &b) in
                                    row.iter_mut().zip(x).zip(row_bias).zip(&r[j * d..])
                                {
                                    *s = (a + c) + b;
                                }
                                &row
                            }
                            None => x,
                        };
                        let mean = sum(x) / n;
                        let rstd = T::one() / (sum_sq_dev(x, mean) / n + eps).sqrt();
                        for i in 0..dim {
                            o[i].write((x[i] - mean) * rstd * w[i] + b[i]);
                        }
                    }
                })
            });
        // SAFETY: the chunks of `out` and `x` pair up one to one with equal lengths (a
        // multiple of `dim`: x is rows × dim), and every element of each row was written.
        unsafe { out.set_len(x.len()) };
        out
    }
}

impl Map3 for LayerNormOp {
    const NAME: &'static str = "layer norm";
    fn f<T: Real>(
        &self,
        x: &[T],
        lx: &Layout,
        w: &[T],
        _: &Layout,
        b: &[T],
        _: &Layout,
    ) -> Result<Vec<T>> {
        Ok(self.fwd(x, &[], w, b, last_dim(lx)))
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "sieve-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = map3(self, s1, l1, s2, l2, s3, l3)?;
        Ok((out, l1.shape().clone()))
    }

    /// One fused pass: per row, dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w;
    /// dw = Σ dy·x̂ and db = Σ dy as per-task partial sums.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dim = x.dim(D::Minus1)?;
        let rows = x.elem_count() / dim.max(1);
        let packed = x.detach().contiguous()?.apply_op3_no_bwd(
            &w.detach().contiguous()?,
            &dy.contiguous()?,
            &LayerNormGradOp { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.get(rows)?;
        let db = packed.get(rows + 1)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Gradient kernel of [`LayerNormOp`]: output `(rows + 2, dim)` holding dx, then dw, then db.
struct LayerNormGradOp {
    eps: f64,
}

impl LayerNormGradOp {
    fn grad<T: Real>(&self, x: &[T], w: &[T], dy: &[T], dim: usize) -> Vec<T> {
        // x and dy have the same length (checked by `f`).
        let d = dim.max(1);
        let rows = x.len() / d;
        let eps = T::from_f64(self.eps);
        let n = T::from_f64(dim as f64);
        // dx is written whole by the tasks and only the dw/db tail is zeroed: a zeroing
        // `vec!` was a single-threaded memset of every activation per layer norm.
        let mut out: Vec<T> = Vec::with_capacity((rows + 2) * dim);
        let spare = &mut out.spare_capacity_mut()[..(rows + 2) * dim];
        let (dx, tail) = spare.split_at_mut(rows * dim);
        tail.fill(std::mem::MaybeUninit::new(T::zero()));
        // SAFETY: MaybeUninit<T> has T's layout, and the tail now holds zeros. dx stays
        // MaybeUninit until every element is written below.
        let tail = unsafe { &mut *(tail as *mut [std::mem::MaybeUninit<T>] as *mut [T]) };
        let partials: Vec<Vec<T>> = dx
            .par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .zip(dy.par_chunks(d * ROWS_PER_TASK))
            .map(|((dx, x), dy)| {
                // dw in [..dim], db in [dim..]
                let mut acc = vec![T::zero(); 2 * dim];
                simd::dispatch(|| {
                    for ((dx, x), dy) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)) {
                        let mean = sum(x) / n;
                        let rstd = T::one() / (sum_sq_dev(x, mean) / n + eps).sqrt();
                        let mut g_sum = T::zero();
                        let mut gx_sum = T::zero();
                        for i in 0..dim {
                            let xhat = (x[i] - mean) * rstd;
                            let g = dy[i] * w[i];
                            g_sum += g;
                            gx_sum += g * xhat;
                            acc[i] += dy[i] * xhat;
                            acc[dim + i] += dy[i];
                        }
                        let (g_mean, gx_mean) = (g_sum / n, gx_sum / n);
                        for i in 0..dim {
                            let xhat = (x[i] - mean) * rstd;
                            dx[i].write(rstd * (dy[i] * w[i] - g_mean - xhat * gx_mean));
                        }
                    }
                });
                acc
            })
            .collect();
        for acc in partials {
            for (t, a) in tail.iter_mut().zip(acc) {
                *t += a;
            }
        }
        // SAFETY: dx's chunks pair up with x's rows, each row written whole above; the
        // tail holds the summed dw and db.
        unsafe { out.set_len((rows + 2) * dim) };
        out
    }
}

impl Map3 for LayerNormGradOp {
    const NAME: &'static str = "layer norm grad";
    fn f<T: Real>(
        &self,
        x: &[T],
        lx: &Layout,
        w: &[T],
        _: &Layout,
        dy: &[T],
        _: &Layout,
    ) -> Result<Vec<T>> {
        // The kernel pairs dx's rows with x's and dy's: each must hold rows × dim.
        if x.len() != dy.len() {
            candle_core::bail!(
                "layer norm grad: x has {} elements, dy {}",
                x.len(),
                dy.len()
            );
        }
        Ok(self.grad(x, w, dy, last_dim(lx)))
    }
}

impl CustomOp3 for LayerNormGradOp {
    fn name(&self) -> &'static str {
        "sieve-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dim = l1.dims().last().copied().unwrap_or(1);
        let rows = l1.shape().elem_count() / dim.max(1);
        let out = map3(self, s1, l1, s2, l2, s3, l3)?;
        Ok((out, Shape::from((rows + 2, dim))))
    }
}

/// Layer norm over the last dimension in one pass per row.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNormOp { eps })
}

/// Inputs `x`, `residual` (same shape) and `w` and `b` stacked in one `(2 * dim)`
/// vector, or `w`, `b` and a bias added to each row of `x` in one `(3 * dim)` vector:
/// a custom op has at most three inputs.
struct AddLayerNormOp {
    eps: f64,
    /// The third input holds a row bias after `w` and `b` (`3 * dim`, else `2 * dim`).
    biased: bool,
}

impl Map3 for AddLayerNormOp {
    const NAME: &'static str = "add + layer norm";
    fn f<T: Real>(
        &self,
        x: &[T],
        lx: &Layout,
        r: &[T],
        _: &Layout,
        wb: &[T],
        _: &Layout,
    ) -> Result<Vec<T>> {
        let dim = last_dim(lx);
        let parts = if self.biased { 3 } else { 2 };
        if r.len() != x.len() || wb.len() != parts * dim {
            candle_core::bail!(
                "add + layer norm: x has {} elements, the residual {}, weight and bias {} (not {parts} × {dim})",
                x.len(),
                r.len(),
                wb.len()
            );
        }
        let (w, rest) = wb.split_at(dim);
        let (b, row_bias) = rest.split_at(dim);
        Ok(LayerNormOp { eps: self.eps }.fwd_biased(x, row_bias, r, w, b, dim))
    }
}

impl CustomOp3 for AddLayerNormOp {
    fn name(&self) -> &'static str {
        "sieve-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = map3(self, s1, l1, s2, l2, s3, l3)?;
        Ok((out, l1.shape().clone()))
    }
}

/// `layer_norm(x + residual)` in one pass, for inference: the sum is never materialised,
/// which saves the residual add's pass over the activations (candle's add, 1.8% of a
/// forward). It has no backward (the gradient would need the sum); training takes
/// [`layer_norm`] of the sum, as [`crate::ops::add_layer_norm`] chooses.
pub fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    add_layer_norm_with(x, residual, None, w, b, eps)
}

/// [`add_layer_norm`] of `x + row_bias` (a linear layer's bias) when given.
fn add_layer_norm_with(
    x: &Tensor,
    residual: &Tensor,
    row_bias: Option<&Tensor>,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    if x.shape() != residual.shape() {
        candle_core::bail!(
            "add + layer norm: x {:?} and the residual {:?} differ in shape",
            x.shape(),
            residual.shape()
        );
    }
    let dim = x.dim(D::Minus1)?;
    for (what, t) in [
        ("weight", Some(w)),
        ("bias", Some(b)),
        ("row bias", row_bias),
    ] {
        if let Some(t) = t {
            if t.elem_count() != dim {
                candle_core::bail!(
                    "add + layer norm: the {what} has {} elements, rows {dim}",
                    t.elem_count()
                );
            }
        }
    }
    let mut parts = vec![w.flatten_all()?, b.flatten_all()?];
    if let Some(c) = row_bias {
        parts.push(c.flatten_all()?);
    }
    let wb = Tensor::cat(&parts, 0)?;
    x.contiguous()?.apply_op3_no_bwd(
        &residual.contiguous()?,
        &wb,
        &AddLayerNormOp {
            eps,
            biased: row_bias.is_some(),
        },
    )
}

// ---------------------------------------------------------------- GELU

struct GeluOp;

/// x Φ(x) with the exact (erf) Φ.
#[inline(always)]
fn gelu_one<T: Real>(v: T) -> T {
    let half = T::from_f64(0.5);
    let inv_sqrt2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    half * v * (T::one() + (v * inv_sqrt2).erf())
}

impl GeluOp {
    fn fwd<T: Real>(x: &[T]) -> Vec<T> {
        let mut out = Vec::with_capacity(x.len());
        // Written whole, so not zeroed first (a memset of every activation).
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(o, x)| {
                simd::dispatch(|| {
                    for (o, &v) in o.iter_mut().zip(x) {
                        o.write(gelu_one(v));
                    }
                })
            });
        // SAFETY: the chunks of `out` and `x` pair up one to one with equal lengths, and
        // every element of each chunk of `out` was written.
        unsafe { out.set_len(x.len()) };
        out
    }
}

impl Map1 for GeluOp {
    const NAME: &'static str = "gelu";
    fn f<T: Real>(&self, x: &[T], _: &Layout) -> Result<Vec<T>> {
        Ok(Self::fwd(x))
    }
}

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "sieve-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = map1(self, s, l)?;
        Ok((out, l.shape().clone()))
    }

    /// d/dx [x Φ(x)] = Φ(x) + x φ(x), in one fused pass.
    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let g = x
            .detach()
            .contiguous()?
            .apply_op2_no_bwd(&dy.contiguous()?, &GeluGradOp)?;
        Ok(Some(g))
    }
}

struct GeluGradOp;

impl GeluGradOp {
    fn grad<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
        let half = T::from_f64(0.5);
        let inv_sqrt2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
        let inv_sqrt_2pi = T::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
        debug_assert_eq!(x.len(), dy.len(), "checked by the Map2 impl");
        let mut out = Vec::with_capacity(x.len());
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(4096)
            .zip(x.par_chunks(4096).zip(dy.par_chunks(4096)))
            .for_each(|(o, (x, dy))| {
                simd::dispatch(|| {
                    for ((o, &v), &d) in o.iter_mut().zip(x).zip(dy) {
                        let u = v * inv_sqrt2;
                        // exp(-u²) = exp(-v²/2): erf's factor and the density's.
                        let e = (-u * u).exp_fast();
                        let cdf = half * (T::one() + u.erf_given_exp(e));
                        let pdf = e * inv_sqrt_2pi;
                        o.write(d * (cdf + v * pdf));
                    }
                })
            });
        // SAFETY: as in the forward: every element of `out` was written.
        unsafe { out.set_len(x.len()) };
        out
    }
}

impl Map2 for GeluGradOp {
    const NAME: &'static str = "gelu grad";
    fn f<T: Real>(&self, x: &[T], _: &Layout, dy: &[T], _: &Layout) -> Result<Vec<T>> {
        if x.len() != dy.len() {
            candle_core::bail!("gelu grad: x has {} elements, dy {}", x.len(), dy.len());
        }
        Ok(Self::grad(x, dy))
    }
}

impl candle_core::CustomOp2 for GeluGradOp {
    fn name(&self) -> &'static str {
        "sieve-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = map2(self, s1, l1, s2, l2)?;
        Ok((out, l1.shape().clone()))
    }
}

/// Exact (erf) GELU in one multithreaded pass.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluOp)
}

impl candle_core::InplaceOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "sieve-gelu-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        fn go<T: Real>(data: &mut [T], l: &Layout) -> Result<()> {
            let Some((a, b)) = l.contiguous_offsets() else {
                candle_core::bail!("gelu in place: input must be contiguous");
            };
            data[a..b].par_chunks_mut(4096).for_each(|c| {
                simd::dispatch(|| {
                    for v in c.iter_mut() {
                        *v = gelu_one(*v);
                    }
                })
            });
            Ok(())
        }
        match s {
            CpuStorage::F32(v) => go(v, l),
            CpuStorage::F64(v) => go(v, l),
            other => candle_core::bail!("gelu in place: unsupported dtype {:?}", other.dtype()),
        }
    }
}

/// [`gelu`] written over `x`'s own buffer, for inference: no new buffer of the
/// intermediate layer's size (the largest activation) is allocated and first written.
/// `x` must be the only handle on its storage (a linear layer's fresh output): every
/// tensor sharing that storage sees the change. No backward.
pub(crate) fn gelu_in_place(x: Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    x.inplace_op1(&GeluOp)?;
    Ok(x)
}

// ---------------------------------------------------------------- attention

/// Multi-head self-attention on the fused Q|K|V projection.
///
/// Input `(rows, 3 * hidden)` as one linear layer produces it; output `(rows, hidden)`,
/// heads concatenated, ready for the output projection. No permuted copies of Q, K, V
/// are made: the matrix products read them in place with strides, one rayon task per
/// (sequence, head). The sequences lie in the rows as [`Rows`] says: padded to one
/// length under a mask, or packed back to back with no padding at all.
#[derive(Debug, Clone)]
enum Rows {
    /// A `(batch, seq)` mask, 1 for tokens and 0 for padding, in the input's dtype:
    /// sequence `b` is rows `b * seq ..` of the input.
    Padded(Tensor),
    /// Sequence lengths: the sequences' rows back to back (see
    /// [`crate::model::Packed`]). Nothing is masked, and no padded row is computed.
    Packed(Arc<[usize]>),
}

/// One sequence as the attention kernels see it.
struct SeqRows<T> {
    /// Its first row in the Q|K|V input and in the output.
    offset: usize,
    /// Its rows (queries).
    rows: usize,
    /// The keys that can receive weight (padding past the last token is skipped).
    keys: usize,
    /// Added to the scores of those keys: `MASK_VALUE` at padding, else 0.
    bias: Vec<T>,
}

impl Rows {
    /// Each sequence's rows, checked against a `rows × width` input of `heads` heads;
    /// also the hidden size and the head dimension.
    fn sequences<T: Real>(
        &self,
        heads: usize,
        rows: usize,
        width: usize,
    ) -> Result<(Vec<SeqRows<T>>, usize, usize)> {
        if heads == 0 || !width.is_multiple_of(3) || !(width / 3).is_multiple_of(heads) {
            candle_core::bail!(
                "attention: qkv width {width} does not split into Q, K, V of {heads} heads"
            );
        }
        let seqs = match self {
            Rows::Padded(mask) => {
                let (batch, seq) = mask.dims2()?;
                if rows != batch * seq {
                    candle_core::bail!(
                        "attention: qkv {rows}×{width} does not match mask {batch}×{seq}"
                    );
                }
                let mask: Vec<T> = mask.flatten_all()?.to_vec1::<T>()?;
                let mask_value = T::from_f64(crate::model::MASK_VALUE);
                (0..batch)
                    .map(|bi| {
                        let m = &mask[bi * seq..(bi + 1) * seq];
                        let keys = valid_keys(m);
                        SeqRows {
                            offset: bi * seq,
                            rows: seq,
                            keys,
                            bias: m[..keys]
                                .iter()
                                .map(|&keep| (T::one() - keep) * mask_value)
                                .collect(),
                        }
                    })
                    .collect()
            }
            Rows::Packed(lens) => {
                let total: usize = lens.iter().sum();
                if rows != total {
                    candle_core::bail!(
                        "attention: qkv has {rows} rows, the packed sequences {total}"
                    );
                }
                let mut offset = 0;
                lens.iter()
                    .map(|&n| {
                        let s = SeqRows {
                            offset,
                            rows: n,
                            keys: n,
                            bias: vec![T::zero(); n],
                        };
                        offset += n;
                        s
                    })
                    .collect()
            }
        };
        Ok((seqs, width / 3, width / 3 / heads))
    }
}

struct AttentionOp {
    rows: Rows,
    heads: usize,
}

impl AttentionOp {
    fn fwd<T: Real>(&self, qkv: &[T], rows: usize, width: usize) -> Result<Vec<T>> {
        let (seqs, hidden, hd) = self.rows.sequences::<T>(self.heads, rows, width)?;
        let heads = self.heads;
        let scale = T::from_f64(1.0 / (hd as f64).sqrt());
        // Every (row, column) is written by exactly one task below (the sequences cover
        // the rows, the heads the columns), so the buffer is not zeroed first: that was a
        // single-threaded memset of the context before each attention.
        let mut out: Vec<T> = Vec::with_capacity(rows * hidden);
        let dst = SharedOut(out.spare_capacity_mut().as_mut_ptr().cast::<T>());
        let covered: usize = seqs.iter().map(|s| s.rows).sum();
        if covered != rows || heads * hd != hidden {
            candle_core::bail!(
                "attention: the sequences cover {covered} of {rows} rows, the heads {} of {hidden} columns",
                heads * hd
            );
        }
        (0..seqs.len() * heads).into_par_iter().for_each(|task| {
            let (s, hi) = (&seqs[task / heads], task % heads);
            let (seq, valid, bias) = (s.rows, s.keys, &s.bias);
            if seq == 0 {
                return;
            }
            if valid == 0 {
                // No key to attend to: the context is zero (an empty product may leave
                // its destination unwritten).
                for r in 0..seq {
                    // SAFETY: row r of this sequence, this head's hd columns: inside
                    // `out` and written by this task alone.
                    unsafe {
                        std::ptr::write_bytes(dst.at((s.offset + r) * hidden + hi * hd), 0, hd)
                    };
                }
                return;
            }
            let base = s.offset * width + hi * hd;
            let (q, k, v) = (
                qkv[base..].as_ptr(),
                qkv[base + hidden..].as_ptr(),
                qkv[base + 2 * hidden..].as_ptr(),
            );
            let mut scores = vec![T::zero(); seq * valid];
            // SAFETY: Q, K, V of this (sequence, head) are `seq` rows of `hd` columns at
            // row stride `width` inside `qkv`; keys and values are read only up to
            // `valid` rows; `scores` is seq×valid. The context goes to this head's
            // columns of this sequence's rows of `out` (row stride `hidden`), which no
            // other task writes.
            unsafe {
                // scores = scale · Q Kᵀ  (seq × valid)
                mm(
                    seq,
                    valid,
                    hd,
                    (scores.as_mut_ptr(), valid),
                    (q, width, 1),
                    (k, 1, width),
                    scale,
                    T::zero(),
                );
                simd::softmax_rows(&mut scores, bias, valid);
                // ctx = P V  (seq × hd)
                mm(
                    seq,
                    hd,
                    valid,
                    (dst.at(s.offset * hidden + hi * hd), hidden),
                    (scores.as_ptr(), valid, 1),
                    (v, width, 1),
                    T::one(),
                    T::zero(),
                );
            }
        });
        // SAFETY: every element was written above (checked coverage: each sequence's
        // rows × each head's columns, by the product or the zero fill).
        unsafe { out.set_len(rows * hidden) };
        Ok(out)
    }
}

impl Map1 for AttentionOp {
    const NAME: &'static str = "attention";
    fn f<T: Real>(&self, qkv: &[T], l: &Layout) -> Result<Vec<T>> {
        let (rows, width) = l.shape().dims2()?;
        self.fwd(qkv, rows, width)
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "sieve-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, width) = l.shape().dims2()?;
        let out = map1(self, s, l)?;
        Ok((out, Shape::from((rows, width / 3))))
    }

    /// Recomputes the probabilities P per (sequence, head) and applies the chain rule
    /// of softmax attention in one fused kernel:
    /// dV = Pᵀ dC, dP = dC Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = s dS K, dK = s dSᵀ Q.
    fn bwd(&self, qkv: &Tensor, _res: &Tensor, dctx: &Tensor) -> Result<Option<Tensor>> {
        let grad = AttentionGradOp {
            rows: self.rows.clone(),
            heads: self.heads,
        };
        Ok(Some(
            qkv.detach()
                .contiguous()?
                .apply_op2_no_bwd(&dctx.contiguous()?, &grad)?,
        ))
    }
}

/// `dst (m×n) = beta · lhs (m×k) · rhs (k×n)`, single-threaded; `dst` is (pointer, row
/// stride) with unit column stride, the operands (pointer, row stride, column stride).
///
/// # Safety
/// Every element addressed by the sizes and strides must lie in its buffer, and no
/// other thread may touch the addressed part of `dst` during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn mm<T: 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut T, usize),
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    beta: T,
    zero: T,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        false,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        zero,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `n` zeros, written by every rayon thread rather than by one memset.
fn par_zeroed<T: Real>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(1 << 16)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(T::zero())));
    // SAFETY: every element of 0..n was written above.
    unsafe { v.set_len(n) };
    v
}

/// An output buffer that parallel tasks write in disjoint parts (one attention head's
/// columns of one sequence's rows each), straight from the matrix products.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: only used for writes to disjoint regions, each by one task (see users).
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// Pointer `offset` elements in; a method so that closures capture the whole
    /// (Send) wrapper rather than its raw-pointer field.
    fn at(self, offset: usize) -> *mut T {
        // SAFETY: callers stay inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// Gradient kernel of [`AttentionOp`]: inputs `qkv` and `dctx`, output `d_qkv`.
struct AttentionGradOp {
    rows: Rows,
    heads: usize,
}

impl AttentionGradOp {
    fn grad<T: Real>(&self, qkv: &[T], dc: &[T], rows: usize, width: usize) -> Result<Vec<T>> {
        let (seqs, hidden, hd) = self.rows.sequences::<T>(self.heads, rows, width)?;
        let heads = self.heads;
        let scale = T::from_f64(1.0 / (hd as f64).sqrt());
        let (z, one) = (T::zero(), T::one());
        // Zeroed (padding keys and values get no gradient), but by all threads: a
        // zeroing `vec!` was a single-threaded memset of d_qkv per attention.
        let mut out = par_zeroed::<T>(rows * width);
        let dst = SharedOut(out.as_mut_ptr());
        (0..seqs.len() * heads).into_par_iter().for_each(|task| {
            let (s, hi) = (&seqs[task / heads], task % heads);
            let (seq, valid, bias) = (s.rows, s.keys, &s.bias);
            if seq == 0 {
                return;
            }
            let qo = s.offset * width + hi * hd;
            let (ko, vo) = (qo + hidden, qo + 2 * hidden);
            let (q, k, v) = (qkv[qo..].as_ptr(), qkv[ko..].as_ptr(), qkv[vo..].as_ptr());
            let dcp = dc[s.offset * hidden + hi * hd..].as_ptr();
            let mut p = vec![z; seq * valid];
            let mut dp = vec![z; seq * valid];
            // SAFETY: Q, K, V of this (sequence, head) are `seq` rows of `hd` columns at
            // row stride `width` inside `qkv`; dC likewise at stride `hidden` inside
            // `dc`; keys and values are read only up to `valid` rows; `p` and `dp` are
            // seq×valid. dQ, dK, dV go to this head's columns of this sequence's rows of
            // `out` (row stride `width`), which no other task writes. Rows of dK and dV
            // past `valid` stay zero: their softmax weights are exactly zero in the
            // reference too.
            unsafe {
                mm(
                    seq,
                    valid,
                    hd,
                    (p.as_mut_ptr(), valid),
                    (q, width, 1),
                    (k, 1, width),
                    scale,
                    z,
                );
                simd::softmax_rows(&mut p, bias, valid);
                // dV = Pᵀ dC, dP = dC Vᵀ
                mm(
                    valid,
                    hd,
                    seq,
                    (dst.at(vo), width),
                    (p.as_ptr(), 1, valid),
                    (dcp, hidden, 1),
                    one,
                    z,
                );
                mm(
                    seq,
                    valid,
                    hd,
                    (dp.as_mut_ptr(), valid),
                    (dcp, hidden, 1),
                    (v, 1, width),
                    one,
                    z,
                );
            }
            // dS = P ⊙ (dP − rowsum(dP ⊙ P))
            for (dpr, pr) in dp.chunks_mut(valid).zip(p.chunks(valid)) {
                let dot = dot(dpr, pr);
                for (d, &p) in dpr.iter_mut().zip(pr) {
                    *d = p * (*d - dot);
                }
            }
            unsafe {
                // dQ = scale · dS K, dK = scale · dSᵀ Q
                mm(
                    seq,
                    hd,
                    valid,
                    (dst.at(qo), width),
                    (dp.as_ptr(), valid, 1),
                    (k, width, 1),
                    scale,
                    z,
                );
                mm(
                    valid,
                    hd,
                    seq,
                    (dst.at(ko), width),
                    (dp.as_ptr(), 1, valid),
                    (q, width, 1),
                    scale,
                    z,
                );
            }
        });
        Ok(out)
    }
}

impl Map2 for AttentionGradOp {
    const NAME: &'static str = "attention grad";
    fn f<T: Real>(&self, qkv: &[T], l: &Layout, dc: &[T], _: &Layout) -> Result<Vec<T>> {
        let (rows, width) = l.shape().dims2()?;
        self.grad(qkv, dc, rows, width)
    }
}

impl candle_core::CustomOp2 for AttentionGradOp {
    fn name(&self) -> &'static str {
        "sieve-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = map2(self, s1, l1, s2, l2)?;
        Ok((out, l1.shape().clone()))
    }
}

/// Self-attention from a fused `(batch * seq, 3 * hidden)` Q|K|V projection and a
/// `(batch, seq)` 0/1 mask; returns `(batch * seq, hidden)`.
pub fn attention(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    let op = AttentionOp {
        rows: Rows::Padded(mask.detach().to_dtype(qkv.dtype())?),
        heads,
    };
    qkv.contiguous()?.apply_op1(op)
}

/// Self-attention over packed sequences: `qkv` is `(Σ lens, 3 * hidden)`, each
/// sequence's rows back to back and attending only to its own; returns
/// `(Σ lens, hidden)`. No padding exists, so none is masked or computed.
pub fn attention_packed(qkv: &Tensor, lens: &[usize], heads: usize) -> Result<Tensor> {
    let op = AttentionOp {
        rows: Rows::Packed(lens.into()),
        heads,
    };
    qkv.contiguous()?.apply_op1(op)
}

// ---------------------------------------------------------------- linear

/// `y = x Wᵀ + b` as one matrix product that starts from the bias rows, saving the
/// separate broadcast-add pass (and its allocation) over every activation. With
/// `add_bias` false, `y = x Wᵀ` written straight by the product (the bias is then the
/// consumer's to add, in a pass it makes anyway: [`linear_gelu`],
/// [`linear_add_layer_norm`]).
struct LinearOp {
    add_bias: bool,
}

impl LinearOp {
    #[allow(clippy::too_many_arguments)]
    fn fwd<T: Real>(
        &self,
        x: &[T],
        w: &[T],
        b: &[T],
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Vec<T> {
        let add_bias = self.add_bias;
        let mut y: Vec<T> = Vec::with_capacity(rows * out);
        let threads = rayon::current_num_threads();
        // Inside a rayon task (batch-parallel inference) every core already runs its own
        // batch. Otherwise the rows are split into one block per thread, each a
        // single-threaded product: faster here than gemm's own split, which synchronises
        // the cores inside every product.
        let nested = rayon::current_thread_index().is_some();
        let block = if !nested && threads > 1 && rows * out * inp > 1 << 16 {
            rows.div_ceil(threads)
        } else {
            rows.max(1)
        };
        if out == 0 {
            return y;
        }
        // Each block starts from the bias rows, written by the thread that multiplies
        // into them: filled up front on one thread, they were a single-threaded copy of
        // every layer's output (8% of a forward's time, the other core idle).
        y.spare_capacity_mut()[..rows * out]
            .par_chunks_mut(block * out)
            .enumerate()
            .for_each(|(i, y)| {
                // With the CPU's widest stores: compiled for baseline SSE2 this copy ran
                // at 16 bytes a store and took 5.5% of a forward. Without the bias,
                // nothing is written first: the product does not read `y`.
                if add_bias {
                    simd::dispatch(|| {
                        for row in y.chunks_mut(out) {
                            for (d, &v) in row.iter_mut().zip(b) {
                                d.write(v);
                            }
                        }
                    });
                }
                let r = y.len() / out;
                let x = &x[i * block * inp..(i * block + r) * inp];
                // SAFETY: y is r×out (row-major), x r×inp, w out×inp read as its
                // transpose (element (k, j) at j*inp + k); all indices stay inside the
                // three buffers. y is passed as a pointer, never as a slice of T: with
                // the bias every element was just written and the product reads them;
                // without it the product writes every element and reads none
                // (read_dst false: gemm-common forces alpha to 0 and its kernels only
                // store in that case).
                unsafe {
                    gemm::gemm(
                        r,
                        out,
                        inp,
                        y.as_mut_ptr().cast::<T>(),
                        1,
                        out as isize,
                        add_bias,
                        x.as_ptr(),
                        1,
                        inp as isize,
                        w.as_ptr(),
                        inp as isize,
                        1,
                        if add_bias { T::one() } else { T::zero() },
                        T::one(),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        // SAFETY: the blocks cover all rows × out elements, each written (by the bias
        // copy and the product, or by the product alone).
        unsafe { y.set_len(rows * out) };
        y
    }
}

impl Map3 for LinearOp {
    const NAME: &'static str = "linear";
    fn f<T: Real>(
        &self,
        x: &[T],
        lx: &Layout,
        w: &[T],
        lw: &Layout,
        b: &[T],
        _: &Layout,
    ) -> Result<Vec<T>> {
        let (rows, inp) = lx.shape().dims2()?;
        let out = lw.shape().dims2()?.0;
        Ok(self.fwd(x, w, b, rows, inp, out))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "sieve-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inp) = l1.shape().dims2()?;
        let (out, w_in) = l2.shape().dims2()?;
        if w_in != inp || l3.shape().elem_count() != out {
            candle_core::bail!(
                "linear: x {rows}×{inp}, weight {out}×{w_in}, bias {:?}",
                l3.shape()
            );
        }
        let y = map3(self, s1, l1, s2, l2, s3, l3)?;
        Ok((y, Shape::from((rows, out))))
    }

    /// dx = dy W, dW = dyᵀ x and db = Σ dy in one kernel ([`LinearGradOp`]): candle's
    /// `dy.sum(0)` is a single-threaded strided reduction, and its matmuls split every
    /// product across the cores with a barrier each.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, inp) = x.dims2()?;
        let out = w.dim(0)?;
        let packed = x.detach().contiguous()?.apply_op3_no_bwd(
            &w.detach().contiguous()?,
            &dy.contiguous()?,
            &LinearGradOp,
        )?;
        let dx = packed.narrow(0, 0, rows * inp)?.reshape((rows, inp))?;
        let dw = packed
            .narrow(0, rows * inp, out * inp)?
            .reshape((out, inp))?;
        let db = packed.narrow(0, (rows + out) * inp, out)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Gradient kernel of [`LinearOp`]: inputs `x (rows×inp)`, `W (out×inp)`, `dy
/// (rows×out)`; output one flat buffer holding dx, then dW, then db.
struct LinearGradOp;

impl LinearGradOp {
    fn grad<T: Real>(x: &[T], w: &[T], dy: &[T], rows: usize, inp: usize, out: usize) -> Vec<T> {
        let (z, one) = (T::zero(), T::one());
        let len = (rows + out) * inp + out;
        if rows == 0 || out == 0 || inp == 0 {
            // An empty product may leave its destination unwritten: all zeros is right.
            return vec![z; len];
        }
        // dx and dW are written whole by the products (beta 0: the destination is never
        // read), so only db is zeroed: zeroing all of it was a memset of every layer's
        // activations per step.
        let mut buf: Vec<T> = Vec::with_capacity(len);
        let spare = &mut buf.spare_capacity_mut()[..len];
        let (dx, rest) = spare.split_at_mut(rows * inp);
        let (dw, db) = rest.split_at_mut(out * inp);
        db.fill(std::mem::MaybeUninit::new(z));
        // SAFETY (for the casts below): MaybeUninit<T> has T's layout; the products
        // only write these elements, and db now holds zeros.
        let db = unsafe { &mut *(db as *mut [std::mem::MaybeUninit<T>] as *mut [T]) };
        let threads = rayon::current_num_threads().max(1);
        let row_block = rows.div_ceil(threads).max(1);
        let out_block = out.div_ceil(threads).max(1);
        // dx, then dW: one after the other, each cut into one block per thread. Running
        // the two at once (one thread on each) was 10-15% slower on every layer shape
        // (`BENCH_GEMM_LAYERS=1 bench_gemm`, Xeon): the two products then compete for
        // the cache with different operands.
        // dx = dy W, by blocks of rows.
        dx.par_chunks_mut(row_block * inp)
            .zip(dy.par_chunks(row_block * out))
            .for_each(|(dx, dy)| {
                let r = dy.len() / out.max(1);
                // SAFETY: dy block r×out, W out×inp, dx block r×inp (written,
                // not read).
                unsafe {
                    mm(
                        r,
                        inp,
                        out,
                        (dx.as_mut_ptr().cast::<T>(), inp),
                        (dy.as_ptr(), out, 1),
                        (w.as_ptr(), inp, 1),
                        one,
                        z,
                    )
                }
            });
        // dW = dyᵀ x and db = Σ_rows dy, by blocks of output features.
        dw.par_chunks_mut(out_block * inp)
            .zip(db.par_chunks_mut(out_block))
            .enumerate()
            .for_each(|(i, (dw, db))| {
                let (o0, r) = (i * out_block, db.len());
                // SAFETY: dyᵀ rows o0..o0+r are dy's columns (stride 1 between
                // them, `out` between rows of dy); x is rows×inp; dw block r×inp.
                unsafe {
                    mm(
                        r,
                        inp,
                        rows,
                        (dw.as_mut_ptr().cast::<T>(), inp),
                        (dy[o0..].as_ptr(), 1, out),
                        (x.as_ptr(), inp, 1),
                        one,
                        z,
                    )
                }
                simd::dispatch(|| {
                    for row in dy.chunks(out) {
                        for (b, &g) in db.iter_mut().zip(&row[o0..o0 + r]) {
                            *b += g;
                        }
                    }
                })
            });
        // SAFETY: every element of 0..len was written above (dx and dW by the products,
        // db by the fill and the sums).
        unsafe { buf.set_len(len) };
        buf
    }
}

impl Map3 for LinearGradOp {
    const NAME: &'static str = "linear grad";
    fn f<T: Real>(
        &self,
        x: &[T],
        lx: &Layout,
        w: &[T],
        lw: &Layout,
        dy: &[T],
        _: &Layout,
    ) -> Result<Vec<T>> {
        let (rows, inp) = lx.shape().dims2()?;
        let out = lw.shape().dims2()?.0;
        Ok(Self::grad(x, w, dy, rows, inp, out))
    }
}

impl CustomOp3 for LinearGradOp {
    fn name(&self) -> &'static str {
        "sieve-linear-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inp) = l1.shape().dims2()?;
        let (out, w_in) = l2.shape().dims2()?;
        if w_in != inp || l3.shape().dims2()? != (rows, out) {
            candle_core::bail!(
                "linear grad: x {rows}×{inp}, weight {out}×{w_in}, dy {:?}",
                l3.shape()
            );
        }
        let g = map3(self, s1, l1, s2, l2, s3, l3)?;
        Ok((g, Shape::from((rows + out) * inp + out)))
    }
}

/// `x Wᵀ + b` for 2-D `x`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LinearOp { add_bias: true },
    )
}

/// `x Wᵀ` without the bias, for inference (no backward): the consumer adds `b`.
fn linear_unbiased(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &w.contiguous()?,
        &b.contiguous()?,
        &LinearOp { add_bias: false },
    )
}

/// `gelu(x Wᵀ + b)` for inference (no backward): the product writes `x Wᵀ`, and one
/// pass over it adds the bias and applies GELU in place. The bias rows are never
/// written first for the product to read back (a memory-bound copy of the largest
/// activation), and GELU allocates nothing.
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = linear_unbiased(x, w, b)?;
    y.inplace_op2(&b.contiguous()?, &BiasGeluOp)?;
    Ok(y)
}

/// `layer_norm(x Wᵀ + b_lin + residual)` for inference (no backward): the product
/// writes `x Wᵀ`, and the layer norm's row pass adds the linear's bias and the residual
/// as it reads each row. Equal to the unfused `layer_norm(linear(x) + residual)` up to
/// where the bias enters the product's sum (one rounding).
#[allow(clippy::too_many_arguments)]
pub fn linear_add_layer_norm(
    x: &Tensor,
    w: &Tensor,
    b_lin: &Tensor,
    residual: &Tensor,
    ln_w: &Tensor,
    ln_b: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let y = linear_unbiased(x, w, b_lin)?;
    add_layer_norm_with(&y, residual, Some(b_lin), ln_w, ln_b, eps)
}

/// In place over `x` (rows of `bias.len()`): `x ← gelu(x + bias)`.
struct BiasGeluOp;

impl candle_core::InplaceOp2 for BiasGeluOp {
    fn name(&self) -> &'static str {
        "sieve-bias-gelu-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<()> {
        fn go<T: Real>(data: &mut [T], l: &Layout, bias: &[T]) -> Result<()> {
            let Some((a, b)) = l.contiguous_offsets() else {
                candle_core::bail!("bias + gelu: input must be contiguous");
            };
            let data = &mut data[a..b];
            let out = bias.len();
            if l.dims().last() != Some(&out) {
                candle_core::bail!(
                    "bias + gelu: rows of {:?} against a bias of {out}",
                    l.dims().last()
                );
            }
            if data.is_empty() {
                return Ok(());
            }
            let rows_per_task = (4096 / out).max(1);
            data.par_chunks_mut(out * rows_per_task).for_each(|c| {
                simd::dispatch(|| {
                    for row in c.chunks_mut(out) {
                        for (v, &b) in row.iter_mut().zip(bias) {
                            *v = gelu_one(*v + b);
                        }
                    }
                })
            });
            Ok(())
        }
        match (s, bs) {
            (CpuStorage::F32(v), CpuStorage::F32(b)) => go(v, l, contiguous_slice(b, bl)?),
            (CpuStorage::F64(v), CpuStorage::F64(b)) => go(v, l, contiguous_slice(b, bl)?),
            (s, b) => candle_core::bail!(
                "bias + gelu: unsupported dtypes {:?} and {:?}",
                s.dtype(),
                b.dtype()
            ),
        }
    }
}

/// The contiguous elements of a storage's vector that a layout covers.
fn contiguous_slice<'a, T>(data: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("input must be contiguous"),
    }
}

#[cfg(test)]
mod tests {
    use super::Real;

    #[test]
    fn fast_exp_and_erf_are_accurate_in_f32() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.004; // -80 … 80
            let exact = (x as f64).exp();
            let rel = ((x.exp_fast() as f64) - exact).abs() / exact;
            worst_exp = worst_exp.max(rel);
            let e = (x as f64 / 10.0).clamp(-6.0, 6.0);
            let got = Real::erf(e as f32) as f64;
            worst_erf = worst_erf.max((got - candle_core::cpu::erf::erf_f64(e)).abs());
        }
        assert!(worst_exp < 4e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 1e-6, "erf absolute error {worst_erf}");
        assert_eq!((-1e9f32).exp_fast(), 0.0);
        assert_eq!((-88.0f32).exp_fast(), 0.0);
    }
}
