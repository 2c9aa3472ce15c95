//! AdamW with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`.
//!
//! candle-nn's `AdamW` runs about a dozen single-threaded tensor ops per parameter and
//! step, each allocating a tensor the size of the model (5–6% of a MiniLM training step
//! on two cores), and keeps its moments private, so a run cannot be checkpointed and
//! resumed. This one updates weights and moments in place in one multithreaded pass on
//! the CPU, falls back to tensor ops on other devices, and saves its state to
//! safetensors.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var, WithDType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Elements per rayon task in the update: large enough to amortise the task, small
/// enough to balance two to a few dozen cores on a 20M-parameter model.
const ELEMENTS_PER_TASK: usize = 1 << 16;

/// Where [`AdamW::step`] finds each parameter's gradient: a backward pass's
/// `GradStore`, or gradients summed over several (GradCache).
pub trait GradSource {
    fn grad(&self, param: &Tensor) -> Option<&Tensor>;
}

impl GradSource for GradStore {
    fn grad(&self, param: &Tensor) -> Option<&Tensor> {
        self.get(param)
    }
}

/// Hyper-parameters, with PyTorch's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// First and second moments of one parameter.
enum Moments {
    /// Host vectors updated in place with the weights (CPU parameters).
    F32(Vec<f32>, Vec<f32>),
    F64(Vec<f64>, Vec<f64>),
    /// Device tensors, updated with tensor ops (GPU parameters or other dtypes).
    Tensors(Tensor, Tensor),
}

struct Param {
    name: String,
    var: Var,
    moments: Moments,
}

/// AdamW over named parameters.
pub struct AdamW {
    params: Vec<Param>,
    step: u64,
    /// The step count at the last [`AdamW::reset`]: bias correction restarts from it,
    /// while `step` keeps counting the run's steps (checkpoints line up on it).
    reset_at: u64,
    pub config: AdamWConfig,
}

/// Per-step scalars shared by every element.
#[derive(Clone, Copy)]
struct Coeffs {
    decay: f64,
    beta1: f64,
    beta2: f64,
    step_size: f64,
    inv_sqrt_bc2: f64,
    eps: f64,
}

impl AdamW {
    /// An optimiser over `params` (name, variable), sorted by name so that saved state
    /// lines up however the caller collected them.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let mut params = params;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let params = params
            .into_iter()
            .map(|(name, var)| {
                let moments = zero_moments(&var)?;
                Ok(Param { name, var, moments })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            step: 0,
            reset_at: 0,
            config,
        })
    }

    /// Every variable of a candle-nn `VarMap`, by its path name.
    pub fn from_varmap(varmap: &candle_nn::VarMap, config: AdamWConfig) -> Result<Self> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self::new(vars, config)
    }

    /// The parameters, sorted by name.
    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|p| p.var.clone()).collect()
    }

    /// Parameter names and variables, sorted by name.
    pub fn named_vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var))
    }

    /// Steps taken so far (the bias-correction exponent).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Forgets the moments, as a fresh optimiser would, while the step count goes on.
    ///
    /// Alternating coordinate ascent switches which side of the loss moves; the moments
    /// of the previous phase describe gradients of a different function.
    pub fn reset(&mut self) -> Result<()> {
        for p in &mut self.params {
            p.moments = zero_moments(&p.var)?;
        }
        self.reset_at = self.step;
        Ok(())
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Backpropagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One update from `grads`; parameters without a gradient are left alone (their
    /// moments do not decay either, as in PyTorch).
    pub fn step(&mut self, grads: &dyn GradSource) -> Result<()> {
        self.step += 1;
        let c = &self.config;
        let t = (self.step - self.reset_at) as i32;
        let coeffs = Coeffs {
            decay: 1.0 - c.lr * c.weight_decay,
            beta1: c.beta1,
            beta2: c.beta2,
            step_size: c.lr / (1.0 - c.beta1.powi(t)),
            inv_sqrt_bc2: 1.0 / (1.0 - c.beta2.powi(t)).sqrt(),
            eps: c.eps,
        };
        for p in &mut self.params {
            let Some(g) = grads.grad(p.var.as_tensor()) else {
                continue;
            };
            let g = g.contiguous()?;
            match &mut p.moments {
                Moments::F32(m, v) => p
                    .var
                    .as_tensor()
                    .inplace_op2(&g, &Update::new(m, v, coeffs))?,
                Moments::F64(m, v) => p
                    .var
                    .as_tensor()
                    .inplace_op2(&g, &Update::new(m, v, coeffs))?,
                Moments::Tensors(m, v) => {
                    let (nm, nv, theta) = tensor_update(p.var.as_tensor(), &g, m, v, coeffs)?;
                    *m = nm;
                    *v = nv;
                    p.var.set(&theta)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the moments (`m.NAME`, `v.NAME`) and, as metadata, the step count and
    /// hyper-parameters to a safetensors file, atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            let (m, v) = moments_as_tensors(&p.moments, p.var.as_tensor())?;
            tensors.push((format!("m.{}", p.name), m));
            tensors.push((format!("v.{}", p.name), v));
        }
        let meta: HashMap<String, String> = [
            ("step".to_string(), self.step.to_string()),
            ("reset_at".to_string(), self.reset_at.to_string()),
            (
                "config".to_string(),
                serde_json::to_string(&self.config).map_err(|e| ckpt(path, e))?,
            ),
        ]
        .into();
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(tensors, Some(meta), &tmp).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ckpt(path, e)
        })?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Restores the state [`AdamW::save`] wrote. Every parameter must be present with
    /// its shape; the hyper-parameters in the file replace the current ones.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| ckpt(path, e))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let step: u64 = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ckpt(path, "no step count in the metadata"))?;
        // Files written before resets existed have no `reset_at`: never reset.
        let reset_at: u64 = match meta.get("reset_at") {
            Some(s) => s
                .parse()
                .ok()
                .filter(|&r| r <= step)
                .ok_or_else(|| ckpt(path, format!("reset_at {s:?} is not a step <= {step}")))?,
            None => 0,
        };
        let config: AdamWConfig = match meta.get("config") {
            Some(s) => serde_json::from_str(s).map_err(|e| ckpt(path, e))?,
            None => self.config,
        };
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        for p in &mut self.params {
            let mut take = |kind: &str| -> Result<Tensor> {
                let key = format!("{kind}.{}", p.name);
                let t = tensors
                    .remove(&key)
                    .ok_or_else(|| ckpt(path, format!("missing {key}")))?;
                if t.shape() != p.var.shape() {
                    return Err(ckpt(
                        path,
                        format!(
                            "{key}: shape {:?}, parameter {:?}",
                            t.shape(),
                            p.var.shape()
                        ),
                    ));
                }
                Ok(t.to_dtype(p.var.dtype())?)
            };
            let (m, v) = (take("m")?, take("v")?);
            p.moments = match &p.moments {
                Moments::F32(..) => Moments::F32(flat(&m)?, flat(&v)?),
                Moments::F64(..) => Moments::F64(flat(&m)?, flat(&v)?),
                Moments::Tensors(..) => {
                    let dev = p.var.device();
                    Moments::Tensors(m.to_device(dev)?, v.to_device(dev)?)
                }
            };
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(ckpt(
                path,
                format!("{extra} matches no parameter of this model"),
            ));
        }
        self.step = step;
        self.reset_at = reset_at;
        self.config = config;
        Ok(())
    }
}

fn ckpt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn flat<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.flatten_all()?.to_vec1::<T>()?)
}

fn zero_moments(var: &Var) -> Result<Moments> {
    let n = var.elem_count();
    Ok(match (var.device(), var.dtype()) {
        (Device::Cpu, DType::F32) => Moments::F32(vec![0.0; n], vec![0.0; n]),
        (Device::Cpu, DType::F64) => Moments::F64(vec![0.0; n], vec![0.0; n]),
        _ => Moments::Tensors(var.zeros_like()?, var.zeros_like()?),
    })
}

fn moments_as_tensors(m: &Moments, like: &Tensor) -> Result<(Tensor, Tensor)> {
    let shape = like.shape();
    Ok(match m {
        Moments::F32(m, v) => (
            Tensor::from_slice(m, shape, &Device::Cpu)?,
            Tensor::from_slice(v, shape, &Device::Cpu)?,
        ),
        Moments::F64(m, v) => (
            Tensor::from_slice(m, shape, &Device::Cpu)?,
            Tensor::from_slice(v, shape, &Device::Cpu)?,
        ),
        Moments::Tensors(m, v) => (m.to_device(&Device::Cpu)?, v.to_device(&Device::Cpu)?),
    })
}

/// The same update with tensor ops, for parameters not on the CPU.
fn tensor_update(
    theta: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    c: Coeffs,
) -> Result<(Tensor, Tensor, Tensor)> {
    let m = ((m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
    let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
    let denom = ((v.sqrt()? * c.inv_sqrt_bc2)? + c.eps)?;
    let theta = ((theta * c.decay)? - ((&m / denom)? * c.step_size)?)?;
    Ok((m, v, theta))
}

/// The in-place CPU kernel: parameter storage is the destination, the gradient the
/// source, the moments are borrowed for the call.
struct Update<'a, T> {
    m: Mutex<&'a mut [T]>,
    v: Mutex<&'a mut [T]>,
    c: Coeffs,
}

impl<'a, T> Update<'a, T> {
    fn new(m: &'a mut [T], v: &'a mut [T], c: Coeffs) -> Self {
        Self {
            m: Mutex::new(m),
            v: Mutex::new(v),
            c,
        }
    }
}

impl<T: WithDType + num_traits::Float + Send + Sync> Update<'_, T> {
    fn run(&self, theta: &mut [T], g: &[T]) -> candle_core::Result<()> {
        let mut m = self
            .m
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: moment lock poisoned".into()))?;
        let mut v = self
            .v
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: moment lock poisoned".into()))?;
        if theta.len() != g.len() || m.len() != g.len() || v.len() != g.len() {
            candle_core::bail!(
                "adamw: parameter of {} elements, gradient {}, moments {}/{}",
                theta.len(),
                g.len(),
                m.len(),
                v.len()
            );
        }
        let k = |x: f64| T::from_f64(x);
        let (decay, b1, b2, step, isb, eps) = (
            k(self.c.decay),
            k(self.c.beta1),
            k(self.c.beta2),
            k(self.c.step_size),
            k(self.c.inv_sqrt_bc2),
            k(self.c.eps),
        );
        let (one_b1, one_b2) = (T::one() - b1, T::one() - b2);
        theta
            .par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(g.par_chunks(ELEMENTS_PER_TASK))
            .zip(m.par_chunks_mut(ELEMENTS_PER_TASK))
            .zip(v.par_chunks_mut(ELEMENTS_PER_TASK))
            .for_each(|(((theta, g), m), v)| {
                // Compiled for the CPU's widest vectors (AVX-512 or AVX2), chosen at run
                // time: the pass is five streams of memory and a sqrt and a division per
                // element, which baseline SSE2 does four at a time.
                sieve_encoder::fused::simd::dispatch(|| {
                    for i in 0..theta.len() {
                        let gi = g[i];
                        let mi = b1 * m[i] + one_b1 * gi;
                        let vi = b2 * v[i] + one_b2 * gi * gi;
                        m[i] = mi;
                        v[i] = vi;
                        theta[i] = theta[i] * decay - step * mi / (vi.sqrt() * isb + eps);
                    }
                })
            });
        Ok(())
    }
}

impl<T: WithDType + num_traits::Float + Send + Sync> InplaceOp2 for Update<'_, T> {
    fn name(&self) -> &'static str {
        "sieve-adamw"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g_s: &CpuStorage,
        g_l: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((d0, d1)), Some((g0, g1))) =
            (dst_l.contiguous_offsets(), g_l.contiguous_offsets())
        else {
            candle_core::bail!("adamw: parameter and gradient must be contiguous")
        };
        let g = &g_s.as_slice::<T>()?[g0..g1];
        let theta: &mut [T] = match (dst, T::DTYPE) {
            (CpuStorage::F32(d), DType::F32) => {
                // SAFETY: T is f32 here (checked by its DTYPE).
                unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr().cast::<T>(), d.len()) }
            }
            (CpuStorage::F64(d), DType::F64) => {
                // SAFETY: T is f64 here (checked by its DTYPE).
                unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr().cast::<T>(), d.len()) }
            }
            (d, _) => candle_core::bail!(
                "adamw: parameter dtype {:?} does not match its moments ({:?})",
                d.dtype(),
                T::DTYPE
            ),
        };
        self.run(&mut theta[d0..d1], g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's AdamW written out element by element in f64, the reference.
    fn reference(theta: &mut [f64], grads: &[Vec<f64>], c: &AdamWConfig) {
        let (mut m, mut v) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..theta.len() {
                theta[i] *= 1.0 - c.lr * c.weight_decay;
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
                let mhat = m[i] / (1.0 - c.beta1.powi(t));
                let vhat = v[i] / (1.0 - c.beta2.powi(t));
                theta[i] -= c.lr * mhat / (vhat.sqrt() + c.eps);
            }
        }
    }

    fn grads_for(n: usize, steps: usize) -> Vec<Vec<f64>> {
        (0..steps)
            .map(|s| {
                (0..n)
                    .map(|i| ((i * 7 + s * 13) % 11) as f64 / 5.0 - 1.0)
                    .collect()
            })
            .collect()
    }

    /// Runs `steps` updates of a parameter of `n` elements through a loss whose
    /// gradient is exactly the given vector (`sum(theta * g)`).
    fn run_steps(opt: &mut AdamW, var: &Var, grads: &[Vec<f64>]) {
        for g in grads {
            let gt = Tensor::from_slice(g, var.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(var.dtype())
                .unwrap();
            let loss = (var.as_tensor() * gt).unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
    }

    #[test]
    fn matches_reference_in_f64_and_f32() {
        let config = AdamWConfig {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        };
        // More elements than one task, so the parallel split is exercised.
        let n = ELEMENTS_PER_TASK + 123;
        let init: Vec<f64> = (0..n).map(|i| (i % 17) as f64 / 17.0 - 0.5).collect();
        let grads = grads_for(n, 5);
        let mut expect = init.clone();
        reference(&mut expect, &grads, &config);
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let t = Tensor::from_slice(&init, n, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let var = Var::from_tensor(&t).unwrap();
            let mut opt = AdamW::new(vec![("w".into(), var.clone())], config).unwrap();
            run_steps(&mut opt, &var, &grads);
            let got: Vec<f64> = var.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
            let d = got
                .iter()
                .zip(&expect)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(d < tol, "{dtype:?}: max difference {d} from the reference");
        }
    }

    #[test]
    fn tensor_path_matches_in_place_path() {
        let c = AdamWConfig::default();
        let coeffs = Coeffs {
            decay: 1.0 - c.lr * c.weight_decay,
            beta1: c.beta1,
            beta2: c.beta2,
            step_size: c.lr / (1.0 - c.beta1),
            inv_sqrt_bc2: 1.0 / (1.0 - c.beta2).sqrt(),
            eps: c.eps,
        };
        let theta: Vec<f64> = (0..50).map(|i| i as f64 / 10.0 - 2.0).collect();
        let g: Vec<f64> = (0..50).map(|i| ((i * 3) % 7) as f64 - 3.0).collect();
        let (mut m, mut v) = (vec![0.1; 50], vec![0.2; 50]);
        let mut t_host = theta.clone();
        Update::new(&mut m, &mut v, coeffs)
            .run(&mut t_host, &g)
            .unwrap();
        let dev = |x: &[f64]| Tensor::from_slice(x, 50, &Device::Cpu).unwrap();
        let (nm, nv, nt) = tensor_update(
            &dev(&theta),
            &dev(&g),
            &dev(&[0.1; 50]),
            &dev(&[0.2; 50]),
            coeffs,
        )
        .unwrap();
        for (a, b) in [(m, nm), (v, nv), (t_host, nt)] {
            let b: Vec<f64> = b.to_vec1().unwrap();
            let d = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-12, "paths differ by {d}");
        }
    }

    /// The small problem of the save and reset tests: settings, a 40-element parameter's
    /// starting values, and six steps of gradients.
    fn small_problem() -> (AdamWConfig, Tensor, Vec<Vec<f64>>) {
        let n = 40;
        let init: Vec<f32> = (0..n).map(|i| i as f32 / 40.0).collect();
        let config = AdamWConfig {
            lr: 0.05,
            ..Default::default()
        };
        let start = Tensor::from_slice(&init, n, &Device::Cpu).unwrap();
        (config, start, grads_for(n, 6))
    }

    /// A fresh variable holding `x`, and an optimiser over it.
    fn optimiser_over(x: &Tensor, config: AdamWConfig) -> (Var, AdamW) {
        let var = Var::from_tensor(x).unwrap();
        let opt = AdamW::new(vec![("layer.w".into(), var.clone())], config).unwrap();
        (var, opt)
    }

    #[test]
    fn save_and_load_resume_exactly() {
        let (config, start, grads) = small_problem();
        let (straight, mut opt) = optimiser_over(&start, config);
        run_steps(&mut opt, &straight, &grads);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let (first, mut opt1) = optimiser_over(&start, config);
        run_steps(&mut opt1, &first, &grads[..3]);
        opt1.save(&path).unwrap();
        // A fresh optimiser over the saved weights, as after a restart.
        let (resumed, mut opt2) = optimiser_over(first.as_tensor(), Default::default());
        opt2.load(&path).unwrap();
        assert_eq!(opt2.step_count(), 3);
        assert_eq!(opt2.config, config);
        run_steps(&mut opt2, &resumed, &grads[3..]);
        let a: Vec<f32> = straight.to_vec1().unwrap();
        let b: Vec<f32> = resumed.to_vec1().unwrap();
        assert_eq!(a, b, "resumed run must reach the same weights bit for bit");
    }

    #[test]
    fn reset_continues_as_a_fresh_optimiser_and_survives_a_restart() {
        let (config, start, grads) = small_problem();

        // Three steps, a reset, three more.
        let (w, mut opt) = optimiser_over(&start, config);
        run_steps(&mut opt, &w, &grads[..3]);
        let after_three = w.as_tensor().copy().unwrap();
        opt.reset().unwrap();
        run_steps(&mut opt, &w, &grads[3..]);
        assert_eq!(opt.step_count(), 6);

        // A fresh optimiser from the weights at the reset takes the same last three steps.
        let (fresh, mut opt_fresh) = optimiser_over(&after_three, config);
        run_steps(&mut opt_fresh, &fresh, &grads[3..]);
        let a: Vec<f32> = w.to_vec1().unwrap();
        let b: Vec<f32> = fresh.to_vec1().unwrap();
        assert_eq!(
            a, b,
            "after a reset the moments and bias correction start over"
        );
        // And the reset mattered: without it the steps differ.
        let (kept, mut opt_kept) = optimiser_over(&start, config);
        run_steps(&mut opt_kept, &kept, &grads);
        let c: Vec<f32> = kept.to_vec1().unwrap();
        assert_ne!(a, c);

        // Saved one step after a reset, loaded into a new optimiser: same end.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let (w1, mut opt1) = optimiser_over(&start, config);
        run_steps(&mut opt1, &w1, &grads[..3]);
        opt1.reset().unwrap();
        run_steps(&mut opt1, &w1, &grads[3..4]);
        opt1.save(&path).unwrap();
        let (w2, mut opt2) = optimiser_over(w1.as_tensor(), config);
        opt2.load(&path).unwrap();
        run_steps(&mut opt2, &w2, &grads[4..]);
        let d: Vec<f32> = w2.to_vec1().unwrap();
        assert_eq!(a, d, "the reset point is part of the saved state");
    }

    #[test]
    fn load_rejects_mismatched_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let var = Var::zeros(4, DType::F32, &Device::Cpu).unwrap();
        AdamW::new(vec![("a".into(), var)], Default::default())
            .unwrap()
            .save(&path)
            .unwrap();
        let other = Var::zeros(5, DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("a".into(), other)], Default::default()).unwrap();
        let err = opt.load(&path).unwrap_err().to_string();
        assert!(err.contains("m.a") && err.contains("shape"), "{err}");
        let renamed = Var::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("b".into(), renamed)], Default::default()).unwrap();
        let err = opt.load(&path).unwrap_err().to_string();
        assert!(err.contains("missing m.b"), "{err}");
    }
}
