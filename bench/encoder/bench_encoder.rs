//! Forward and forward+backward+AdamW throughput of the candle encoder; the sieve half
//! of `bench/encoder/run.sh` (which runs PyTorch on the same shapes beside it).
//!
//! scripts/build.sh && target/release/examples/bench_encoder \
//!     MODEL_DIR {forward|train} {fixed|texts FILE} [BATCH=32] [SEQ=128] [STEPS=5]
//!
//! `fixed`: BATCH sequences of exactly SEQ tokens. `texts FILE`: one text per line,
//! tokenised with the model's tokenizer (max 256 tokens), consecutive batches of BATCH.
//! Prints one JSON line.

use std::time::Instant;

use candle_core::{Device, Tensor};
use sieve_encoder::config::BertConfig;
use sieve_encoder::{Encoder, LoadOptions, Pooling};
use sieve_trainer::optim::{AdamW, AdamWConfig};

/// The binary's allocator, the same source file.
#[path = "../../src/alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::ALLOCATOR;

/// Matrix-product FLOPs of one forward pass over one sequence of `s` tokens.
fn forward_flops(c: &BertConfig, s: usize) -> f64 {
    let (h, i, l, s) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_hidden_layers as f64,
        s as f64,
    );
    l * s * (2.0 * (4.0 * h * h + 2.0 * h * i) + 4.0 * s * h)
}

fn gemm_peak_gflops() -> f64 {
    let n = 2048;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
    let _ = a.matmul(&b).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let _ = a.matmul(&b).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

fn main() {
    alloc::configure();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: bench_encoder MODEL_DIR {forward|train} {fixed|texts FILE} [BATCH] [SEQ] [STEPS]";
    let model_dir = args.first().expect(usage);
    let mode = args.get(1).expect(usage).as_str();
    let (batches_src, rest) = match args.get(2).map(String::as_str) {
        Some("fixed") => (None, &args[3..]),
        Some("texts") => (Some(args.get(3).expect(usage).clone()), &args[4..]),
        _ => panic!("{usage}"),
    };
    let num = |i: usize, d: usize| rest.get(i).map(|s| s.parse().expect(usage)).unwrap_or(d);
    let (batch, seq, steps) = (num(0, 32), num(1, 128), num(2, 5));

    let dir = std::path::Path::new(model_dir);
    let encoder = Encoder::load_dir(dir, &LoadOptions::default()).unwrap();
    let config = encoder.model().config().clone();
    let token_batches: Vec<Vec<Vec<u32>>> = match &batches_src {
        None => (0..steps + 1)
            .map(|b| {
                (0..batch)
                    .map(|i| {
                        (0..seq)
                            .map(|t| 1000 + ((b * 7919 + i * 104_729 + t * 31) % 20_000) as u32)
                            .collect()
                    })
                    .collect()
            })
            .collect(),
        Some(file) => {
            let body = std::fs::read_to_string(file).unwrap();
            let texts: Vec<&str> = body.lines().take(batch * (steps + 1)).collect();
            let ids = encoder.tokenize(&texts).unwrap();
            ids.chunks(batch).map(|c| c.to_vec()).collect()
        }
    };
    let tokens: usize = token_batches[1..].iter().flatten().map(Vec::len).sum();
    let flops: f64 = token_batches[1..]
        .iter()
        .flat_map(|b| {
            let s = b.iter().map(Vec::len).max().unwrap_or(0);
            std::iter::repeat_n(forward_flops(&config, s), b.len())
        })
        .sum();

    let seconds = match mode {
        "forward" => {
            let run = |b: &Vec<Vec<u32>>| {
                let refs: Vec<&[u32]> = b.iter().map(Vec::as_slice).collect();
                encoder.embed_tokens(&refs).unwrap()
            };
            run(&token_batches[0]);
            let t = Instant::now();
            for b in &token_batches[1..] {
                run(b);
            }
            t.elapsed().as_secs_f64()
        }
        "train" => {
            // The trainer's path: a trainable encoder whose embed_tokens packs the
            // batch on the CPU (SIEVE_PACKING=off pads it); mean pooling, no
            // normalisation, as the PyTorch side.
            let (trainable, varmap) = Encoder::load_trainable(
                dir,
                &LoadOptions {
                    normalize: false,
                    ..LoadOptions::default()
                },
            )
            .unwrap();
            assert_eq!(trainable.pooling(), Pooling::Mean);
            let mut opt = AdamW::from_varmap(
                &varmap,
                AdamWConfig {
                    lr: 1e-5,
                    ..Default::default()
                },
            )
            .unwrap();
            let probe =
                Tensor::randn(0f32, 1.0, (batch, config.hidden_size), &Device::Cpu).unwrap();
            let mut step = |b: &Vec<Vec<u32>>| {
                let refs: Vec<&[u32]> = b.iter().map(Vec::as_slice).collect();
                let emb = trainable.embed_tokens(&refs).unwrap();
                let loss = (emb * &probe.narrow(0, 0, refs.len()).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap();
                opt.backward_step(&loss).unwrap();
            };
            step(&token_batches[0]);
            let t = Instant::now();
            for b in &token_batches[1..] {
                step(b);
            }
            t.elapsed().as_secs_f64()
        }
        _ => panic!("{usage}"),
    };
    let seqs = (token_batches.len() - 1) * batch;
    let flops = if mode == "train" { 3.0 * flops } else { flops };
    println!(
        "{}",
        serde_json::json!({
            "tool": "sieve",
            "mode": mode,
            "input": batches_src.as_deref().unwrap_or("fixed"),
            "batch": batch,
            "seq": seq,
            "steps": steps,
            "tokens": tokens,
            "seconds": seconds,
            "seq_per_s": seqs as f64 / seconds,
            "s_per_step": seconds / steps as f64,
            "gflops": flops / seconds / 1e9,
            "gemm_peak_gflops": gemm_peak_gflops(),
        })
    );
}
