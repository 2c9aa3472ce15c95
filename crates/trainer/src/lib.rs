//! Contrastive training of sieve encoders.
//!
//! - [`data`]: examples from pair files, BEIR train splits and the judge's labeled
//!   Parquet, with the texts known to answer each query;
//! - [`batch`]: seeded batches in which no text repeats, random or topic-clustered
//!   ([`cluster`]: k-means), and each batch's loss table (which pairs are positives,
//!   negatives, or masked false negatives);
//! - [`dose`]: the false-negative dose, the share of each query's softmax mass on
//!   documents known to answer it: what masking can remove;
//! - [`loss`]: the in-batch softmax with false-negative control, tested against a
//!   dense f64 reference and finite differences;
//! - [`step`]: one batch's gradients, directly or with GradCache;
//! - [`distributed`]: data-parallel steps across processes (NCCL behind the `nccl`
//!   feature), with the whole batch's softmax;
//! - [`optim`]: an AdamW that updates in place and saves its moments, which
//!   candle-nn's cannot;
//! - [`train`]: the loop, checkpoints that resume to the same weights, metrics and
//!   the sentence-transformers export.
//!
//! ```no_run
//! use sieve_trainer::{data::{DataOptions, TrainData}, train::{NoHooks, TrainConfig, Trainer}};
//! let (data, _) = TrainData::load("pairs.jsonl.gz".as_ref(), &DataOptions::default())?;
//! let mut trainer = Trainer::new(
//!     "models/all-MiniLM-L6-v2".as_ref(),
//!     &Default::default(),
//!     data,
//!     TrainConfig::default(),
//!     "runs/minilm-ft".as_ref(),
//! )?;
//! trainer.resume()?; // continue after a crash, if a checkpoint exists
//! let summary = trainer.run(&mut NoHooks)?;
//! println!("{} steps, final loss {:?}", summary.steps, summary.final_loss);
//! # Ok::<(), sieve_trainer::Error>(())
//! ```

pub mod batch;
pub mod cluster;
pub mod data;
pub mod distill;
pub mod distributed;
pub mod dose;
mod error;
pub mod estimate;
pub mod exact;
mod exact_scan;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod rows;
pub mod schedule;
pub mod settings;
pub mod step;
pub mod train;

pub use error::{Error, Result};
