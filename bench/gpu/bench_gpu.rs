//! The Rust half of `bench/gpu/check.sh`: what a GPU run must show that `sieve train`
//! and `sieve encode` do not print themselves. Needs a `--features cuda` build; each
//! subcommand prints one JSON line.
//!
//!   bench_gpu equality MODEL PAIRS.jsonl [BATCH=16]
//!       CPU f32 vs CUDA f32 (and CUDA bf16 mixed precision vs CPU f32) on the same
//!       weights: the pooled embeddings, every parameter's gradient of one in-batch
//!       contrastive step (scale 20), and one exact-softmax step against a 100k table.
//!   bench_gpu exact N [BATCH=32] [REPEATS=5]
//!       The exact-softmax step (loss + backward) on CUDA against an N × 384 table:
//!       first step (which uploads the table), then the median of REPEATS.
//!   bench_gpu step MODEL PAIRS.jsonl [BATCH=32] [REPEATS=10] [DTYPE=f32]
//!       Where one in-batch training step's time goes on CUDA: forward (queries and
//!       documents, loss read back), backward, gradient norm and clipping, AdamW; medians
//!       of REPEATS after one warm-up step, each phase waited for.
//!   bench_gpu encode MODEL PAIRS.jsonl [BATCH=256] [DTYPE=f32]
//!       Encoder::encode throughput over every query and positive of PAIRS, after one
//!       warm-up batch; the same texts as st_gpu.py's encode.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use serde_json::{json, Value};
use sieve_encoder::{Encoder, LoadOptions};
use sieve_trainer::batch::SplitMix64;
use sieve_trainer::exact::{exact_loss, CorpusTable, ExactBatch, DEFAULT_CHUNK};

#[path = "../common.rs"]
mod common;
use common::synthetic_exact_batch;

const DIM: usize = 384;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("equality") if args.len() >= 3 => equality(
            Path::new(&args[1]),
            Path::new(&args[2]),
            args.get(3).and_then(|a| a.parse().ok()).unwrap_or(16),
        ),
        Some("exact") if args.len() >= 2 => exact(
            args[1].parse().unwrap_or(1_000_000),
            args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32),
            args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5),
        ),
        Some("step") if args.len() >= 3 => step(
            Path::new(&args[1]),
            Path::new(&args[2]),
            args.get(3).and_then(|a| a.parse().ok()).unwrap_or(32),
            args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10),
            args.get(5).map(String::as_str).unwrap_or("f32"),
        ),
        Some("encode") if args.len() >= 3 => encode(
            Path::new(&args[1]),
            Path::new(&args[2]),
            args.get(3).and_then(|a| a.parse().ok()).unwrap_or(256),
            args.get(4).map(String::as_str).unwrap_or("f32"),
        ),
        Some("nccl") => nccl_check(),
        _ => {
            eprintln!("usage: bench_gpu equality MODEL PAIRS [BATCH] | exact N [BATCH] [REPEATS] | step MODEL PAIRS [BATCH] [REPEATS] [DTYPE] | encode MODEL PAIRS [BATCH] [DTYPE] | nccl");
            std::process::exit(2);
        }
    };
    match out {
        Ok(v) => println!("{v}"),
        Err(e) => {
            println!("{}", json!({"error": e.to_string()}));
            std::process::exit(1);
        }
    }
}

fn pairs(path: &Path, limit: usize) -> R<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut q, mut d) = (Vec::new(), Vec::new());
    for line in text.lines().take(limit) {
        let v: Value = serde_json::from_str(line)?;
        q.push(v["query"].as_str().ok_or("pair without query")?.to_string());
        d.push(
            v["positive"]
                .as_str()
                .ok_or("pair without positive")?
                .to_string(),
        );
    }
    Ok((q, d))
}

/// NCCL on one GPU, a world of one (NCCL refuses two ranks on one device): the
/// all-gather and all-reduce that `sieve train --distributed` uses run through the
/// custom-op path on the device and give back their input; and the time of the
/// all-reduce of one all-MiniLM-L6-v2-sized gradient buffer.
#[cfg(feature = "nccl")]
fn nccl_check() -> R<Value> {
    use sieve_trainer::distributed::{nccl, Collective, World};
    let world = World {
        rank: 0,
        size: 1,
        local_rank: 0,
        master: None,
    };
    let comm = nccl::Nccl::new(&world, &nccl::new_id()?)?;
    let dev = cuda()?;
    let x = Tensor::randn(0f32, 1.0, (32, DIM), &dev)?;
    let diff =
        |a: &Tensor| -> R<f64> { Ok((a - &x)?.abs()?.max_all()?.to_scalar::<f32>()? as f64) };
    let gather = diff(&comm.all_gather(&x)?)?;
    let reduce = diff(&comm.all_reduce_sum(&x)?)?;
    // A narrowed view that starts inside its storage, as a rank's share of the batch's
    // documents does.
    let wide = Tensor::cat(&[&x, &x], 0)?;
    let view = wide.narrow(0, 32, 32)?;
    let view_gather = diff(&comm.all_gather(&view)?)?;
    let n = 22_713_216; // all-MiniLM-L6-v2's parameters
    let big = Tensor::randn(0f32, 1.0, n, &dev)?;
    comm.all_reduce_sum(&big)?;
    dev.synchronize()?;
    let t0 = std::time::Instant::now();
    let reps = 10;
    for _ in 0..reps {
        comm.all_reduce_sum(&big)?;
    }
    dev.synchronize()?;
    Ok(json!({
        "check": "nccl", "world": 1,
        "all_gather_max_abs_diff": gather, "all_reduce_max_abs_diff": reduce,
        "narrowed_all_gather_max_abs_diff": view_gather,
        "all_reduce_params": n,
        "all_reduce_ms": t0.elapsed().as_secs_f64() * 1e3 / reps as f64,
    }))
}

#[cfg(not(feature = "nccl"))]
fn nccl_check() -> R<Value> {
    Err("bench_gpu was built without the nccl feature (scripts/build-cuda.sh builds it)".into())
}

fn cuda() -> R<Device> {
    Ok(Device::new_cuda(0)?)
}

/// Max |a − b| and the smallest row cosine between two `(n, dim)` embeddings.
fn compare_rows(a: &Tensor, b: &Tensor) -> R<(f64, f64)> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let max = (&a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let dot = (&a * &b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    let cos = (dot / (na * nb)?)?.min_all()?.to_scalar::<f64>()?;
    Ok((max, cos))
}

/// (‖a − b‖², ‖b‖²), both brought to the CPU in f64.
fn sq_diff_and_norm(a: &Tensor, b: &Tensor) -> R<(f64, f64)> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let d = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let n = b.sqr()?.sum_all()?.to_scalar::<f64>()?;
    Ok((d, n))
}

/// ‖a − b‖ / ‖b‖.
fn rel_l2(a: &Tensor, b: &Tensor) -> R<f64> {
    let (d, n) = sq_diff_and_norm(a, b)?;
    Ok((d / n.max(1e-300)).sqrt())
}

/// In-batch contrastive loss (sentence-transformers' MNRL): cross-entropy of
/// `scale · q̂ · d̂ᵀ` against the diagonal.
fn mnrl(q: &Tensor, d: &Tensor, scale: f64) -> R<Tensor> {
    let logits = (q.matmul(&d.t()?)? * scale)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?;
    let n = logits.dim(0)?;
    let eye = Tensor::eye(n, logits.dtype(), logits.device())?;
    let diag = (logits * eye)?.sum_keepdim(D::Minus1)?;
    Ok((lse - diag)?.mean_all()?)
}

struct Side {
    emb: Tensor,
    loss: f64,
    grads: HashMap<String, Tensor>,
    seconds: f64,
}

fn side(
    model: &Path,
    device: Device,
    compute: Option<DType>,
    q: &[String],
    d: &[String],
) -> R<Side> {
    let opts = LoadOptions {
        device,
        compute_dtype: compute,
        ..Default::default()
    };
    let (enc, varmap) = Encoder::load_trainable(model, &opts)?;
    let qr: Vec<&str> = q.iter().map(String::as_str).collect();
    let dr: Vec<&str> = d.iter().map(String::as_str).collect();
    let (qt, dt) = (enc.tokenize(&qr)?, enc.tokenize(&dr)?);
    let qb: Vec<&[u32]> = qt.iter().map(Vec::as_slice).collect();
    let db: Vec<&[u32]> = dt.iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    let qe = enc.embed_tokens(&qb)?;
    let de = enc.embed_tokens(&db)?;
    let loss = mnrl(&qe, &de, 20.0)?;
    let store = loss.backward()?;
    let loss_v = loss.to_scalar::<f32>()? as f64;
    let seconds = t.elapsed().as_secs_f64();
    let mut grads = HashMap::new();
    for (name, var) in varmap.data().lock().map_err(|_| "varmap lock")?.iter() {
        if let Some(g) = store.get(var.as_tensor()) {
            grads.insert(name.clone(), g.clone());
        }
    }
    Ok(Side {
        emb: Tensor::cat(&[&qe, &de], 0)?,
        loss: loss_v,
        grads,
        seconds,
    })
}

fn compare(reference: &Side, other: &Side) -> R<Value> {
    let (max_abs, min_cos) = compare_rows(&other.emb, &reference.emb)?;
    let mut worst = (0f64, String::new());
    let mut missing = Vec::new();
    // Also over all parameters at once: a per-tensor relative error can be large where
    // the tensor's gradient is tiny (sums that nearly cancel), harmless to the update.
    let (mut num, mut den) = (0f64, 0f64);
    for (name, g) in &reference.grads {
        let Some(h) = other.grads.get(name) else {
            missing.push(name.clone());
            continue;
        };
        let (d, n) = sq_diff_and_norm(h, g)?;
        num += d;
        den += n;
        // The key bias's gradient is zero in exact arithmetic (softmax shift invariance).
        if name.ends_with("key.bias") {
            continue;
        }
        let e = (d / n.max(1e-300)).sqrt();
        if e > worst.0 || !e.is_finite() {
            worst = (e, name.clone());
        }
    }
    Ok(json!({
        "grad_all_rel_l2": (num / den.max(1e-300)).sqrt(),
        "embedding_max_abs_diff": max_abs, "embedding_min_cosine": min_cos,
        "loss": other.loss, "loss_diff": (other.loss - reference.loss).abs(),
        "grad_max_rel_l2": worst.0, "grad_worst_param": worst.1,
        "params": reference.grads.len(), "params_without_grad": missing,
        "step_seconds": other.seconds,
    }))
}

fn random_table(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n * DIM)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect()
}

/// One exact-softmax step on `device`: loss, ∂/∂queries, ∂/∂fresh, seconds.
fn exact_step(
    table: &CorpusTable,
    q: &[f32],
    f: &[f32],
    eb: &ExactBatch,
    device: &Device,
) -> R<(f64, Tensor, Tensor, f64)> {
    let b = eb.positives.len();
    let qv = Var::from_tensor(&Tensor::from_slice(q, (b, DIM), device)?)?;
    let fv = Var::from_tensor(&Tensor::from_slice(f, (eb.fresh.len(), DIM), device)?)?;
    let t = Instant::now();
    let loss = exact_loss(
        qv.as_tensor(),
        fv.as_tensor(),
        eb,
        table,
        20.0,
        DEFAULT_CHUNK,
    )?;
    let grads = loss.backward()?;
    let gq = grads
        .get(qv.as_tensor())
        .ok_or("no query gradient")?
        .clone();
    let gf = grads
        .get(fv.as_tensor())
        .ok_or("no fresh gradient")?
        .clone();
    // Reading the values back waits for the device.
    let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let _ = gq.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((l, gq, gf, t.elapsed().as_secs_f64()))
}

fn equality(model: &Path, pairs_path: &Path, batch: usize) -> R<Value> {
    let (q, d) = pairs(pairs_path, batch)?;
    let cpu = side(model, Device::Cpu, None, &q, &d)?;
    let gpu = side(model, cuda()?, None, &q, &d)?;
    let bf16 = side(model, cuda()?, Some(DType::BF16), &q, &d)?;
    // Inference (no variables: candle's fused kernels without a backward) on CUDA against
    // the CPU's trainable forward.
    let inference = {
        let enc = Encoder::load_dir(
            model,
            &LoadOptions {
                device: cuda()?,
                ..Default::default()
            },
        )?;
        let texts: Vec<&str> = q.iter().chain(&d).map(String::as_str).collect();
        let tokens = enc.tokenize(&texts)?;
        let batch: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
        let (max_abs, min_cos) = compare_rows(&enc.embed_tokens(&batch)?, &cpu.emb)?;
        json!({"embedding_max_abs_diff": max_abs, "embedding_min_cosine": min_cos})
    };
    // The exact softmax against a 100k table, CPU (its fused scan) vs CUDA (blocks
    // of the device-resident table).
    let n = 100_000;
    let table = CorpusTable::new(random_table(n, 7), DIM);
    let eb = synthetic_exact_batch(n, 32);
    let qv = random_table(32, 11);
    let fv = random_table(32, 13);
    let (lc, gqc, gfc, _) = exact_step(&table, &qv, &fv, &eb, &Device::Cpu)?;
    let (lg, gqg, gfg, _) = exact_step(&table, &qv, &fv, &eb, &cuda()?)?;
    Ok(json!({
        "check": "equality", "batch": batch,
        "cuda_f32_vs_cpu_f32": compare(&cpu, &gpu)?,
        "cuda_bf16_mixed_vs_cpu_f32": compare(&cpu, &bf16)?,
        "cuda_inference_f32_vs_cpu_f32": inference,
        "cpu_step_seconds": cpu.seconds,
        "exact_100k": {
            "loss_cpu": lc, "loss_cuda": lg, "loss_rel_diff": (lg - lc).abs() / lc.abs().max(1e-12),
            "grad_queries_rel_l2": rel_l2(&gqg, &gqc)?, "grad_fresh_rel_l2": rel_l2(&gfg, &gfc)?,
        },
    }))
}

fn exact(n: usize, batch: usize, repeats: usize) -> R<Value> {
    let device = cuda()?;
    let t = Instant::now();
    let mut table = CorpusTable::new(random_table(n, 7), DIM);
    let build = t.elapsed().as_secs_f64();
    let eb = synthetic_exact_batch(n, batch);
    let qv = random_table(batch, 11);
    let fv = random_table(batch, 13);
    let (_, _, _, first) = exact_step(&table, &qv, &fv, &eb, &device)?;
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let (_, _, _, s) = exact_step(&table, &qv, &fv, &eb, &device)?;
        times.push(s);
    }
    // A training step also writes the batch's rows back into both copies.
    let t = Instant::now();
    table.write_back(&eb.fresh, &fv)?;
    let write_back = t.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let flop = 4.0 * (batch * n * DIM) as f64;
    Ok(json!({
        "check": "exact", "n": n, "batch": batch, "dim": DIM,
        "seconds": median, "all_seconds": times, "first_step_seconds": first,
        "table_build_seconds": build, "write_back_seconds": write_back,
        "tflops": flop / median / 1e12,
        "table_gb_per_s": 2.0 * (n * DIM * 4) as f64 / median / 1e9,
        "table_gib": (n * DIM * 4) as f64 / (1u64 << 30) as f64,
    }))
}

fn step(model: &Path, pairs_path: &Path, batch: usize, repeats: usize, dtype: &str) -> R<Value> {
    use sieve_trainer::optim::{AdamW, AdamWConfig};
    use sieve_trainer::step::ParamGrads;
    let compute = match sieve_encoder::settings::dtype(dtype)? {
        DType::F32 => None,
        d => Some(d),
    };
    let opts = LoadOptions {
        device: cuda()?,
        compute_dtype: compute,
        max_seq_length: Some(128),
        ..Default::default()
    };
    let (enc, varmap) = Encoder::load_trainable(model, &opts)?;
    let mut opt = AdamW::from_varmap(&varmap, AdamWConfig::default())?;
    let params = opt.vars();
    let (q, d) = pairs(pairs_path, batch * (repeats + 1))?;
    let mut phases: [Vec<f64>; 4] = Default::default();
    for r in 0..=repeats {
        let qr: Vec<&str> = q[r * batch..(r + 1) * batch]
            .iter()
            .map(String::as_str)
            .collect();
        let dr: Vec<&str> = d[r * batch..(r + 1) * batch]
            .iter()
            .map(String::as_str)
            .collect();
        let (qt, dt) = (enc.tokenize(&qr)?, enc.tokenize(&dr)?);
        let qb: Vec<&[u32]> = qt.iter().map(Vec::as_slice).collect();
        let db: Vec<&[u32]> = dt.iter().map(Vec::as_slice).collect();
        let t = Instant::now();
        let loss = mnrl(&enc.embed_tokens(&qb)?, &enc.embed_tokens(&db)?, 20.0)?;
        let _ = loss.to_scalar::<f32>()?;
        let t_fwd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut grads = ParamGrads::from_store(loss.backward()?, &params);
        let probe = params.first().ok_or("no parameters")?;
        let _ = grads
            .get(probe.as_tensor())
            .ok_or("no gradient")?
            .sum_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        let t_bwd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        grads.clip(1.0)?;
        let t_clip = t.elapsed().as_secs_f64();
        let t = Instant::now();
        opt.step(&grads)?;
        let _ = probe
            .as_tensor()
            .sum_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        let t_opt = t.elapsed().as_secs_f64();
        if r > 0 {
            for (p, v) in phases.iter_mut().zip([t_fwd, t_bwd, t_clip, t_opt]) {
                p.push(v);
            }
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [mut f, mut b, mut c, mut o] = phases;
    let (f, b, c, o) = (med(&mut f), med(&mut b), med(&mut c), med(&mut o));
    Ok(json!({
        "check": "step", "batch": batch, "seq": 128, "dtype": dtype, "repeats": repeats,
        "forward_s": f, "backward_s": b, "clip_s": c, "adamw_s": o, "total_s": f + b + c + o,
        "params": params.len(),
    }))
}

fn encode(model: &Path, pairs_path: &Path, batch: usize, dtype: &str) -> R<Value> {
    let (q, d) = pairs(pairs_path, usize::MAX)?;
    let texts: Vec<&str> = q.iter().chain(&d).map(String::as_str).collect();
    let opts = LoadOptions {
        device: cuda()?,
        dtype: sieve_encoder::settings::dtype(dtype)?,
        ..Default::default()
    };
    let enc = Encoder::load_dir(model, &opts)?;
    enc.encode(&texts[..batch.min(texts.len())], batch, &|_| {})?;
    let t = Instant::now();
    let emb = enc.encode(&texts, batch, &|_| {})?;
    let s = t.elapsed().as_secs_f64();
    Ok(json!({
        "check": "encode", "tool": "sieve", "texts": texts.len(), "batch": batch, "dtype": dtype,
        "seconds": s, "texts_per_s": texts.len() as f64 / s, "dim": emb.dim,
    }))
}
