//! Batched, length-sorted inference with a loaded model directory.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::config::{BertConfig, ModuleEntry, PoolingConfig, SentenceBertConfig};
use crate::error::{Error, Result};
use crate::model::{pool, pool_packed, BertModel, Packed};
use crate::ops::l2_normalize;
use crate::prompts::{Prompts, Role};
use crate::Pooling;

/// Used when `sentence_bert_config.json` gives no `max_seq_length`: BERT's position table.
const FALLBACK_MAX_SEQ_LENGTH: usize = 512;

/// Texts tokenised at once before sorting by length; bounds the token memory of huge
/// corpora while leaving plenty to sort.
const TOKENIZE_CHUNK: usize = 16_384;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    /// Overrides `sentence_bert_config.json`'s `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// L2-normalise embeddings (cosine similarity becomes a dot product).
    pub normalize: bool,
    /// Mixed precision: compute in this dtype (bf16, f16) from weights held in `dtype`
    /// (f32 masters for training); pooling, normalisation and losses stay in `dtype`.
    pub compute_dtype: Option<DType>,
    /// Prepended to queries instead of the model's own query prompt ([`Prompts`]).
    pub query_prompt: Option<String>,
    /// Prepended to documents instead of the model's own document prompt.
    pub document_prompt: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            max_seq_length: None,
            normalize: true,
            compute_dtype: None,
            query_prompt: None,
            document_prompt: None,
        }
    }
}

/// Embeddings of `n` texts, row-major `n × dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub data: Vec<f32>,
    pub dim: usize,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// A sentence-embedding model: tokenizer, transformer, pooling, normalisation.
pub struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    max_seq_length: usize,
    normalize: bool,
    device: Device,
    dtype: DType,
    dir: PathBuf,
    fingerprint: String,
    prompts: Prompts,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })
}

fn read_optional_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    if path.exists() {
        read_json(path)
    } else {
        Ok(T::default())
    }
}

/// The pooling folder named in `modules.json` (`1_Pooling` by convention).
fn pooling_dir(dir: &Path, modules: &[ModuleEntry]) -> PathBuf {
    modules
        .iter()
        .find(|m| m.kind.ends_with("Pooling"))
        .map(|m| dir.join(&m.path))
        .unwrap_or_else(|| dir.join("1_Pooling"))
}

/// Hashes the weights and every setting that changes an embedding, so caches keyed on it
/// never serve vectors from another model or configuration.
/// Weights with more transformer layers than `config.json` names would load their
/// first layers and silently drop the rest (a 4-layer config over 6-layer weights
/// once scored nDCG 0.378 with no complaint): refuse, naming both counts. Fewer layers
/// fail on their own, as a missing tensor.
fn check_layers(weights: &Path, config: &BertConfig) -> Result<()> {
    // SAFETY: read-only map of the header names; nothing here writes to the file.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights)? };
    let layers = st
        .tensors()
        .iter()
        .filter_map(|(name, _)| {
            let parts: Vec<&str> = name.split('.').collect();
            parts
                .windows(2)
                .find(|w| w[0] == "layer" || w[0] == "layers")
                .and_then(|w| w[1].parse::<usize>().ok())
        })
        .max()
        .map_or(0, |m| m + 1);
    if layers > config.num_hidden_layers {
        return Err(Error::Config {
            path: weights.with_file_name("config.json"),
            message: format!(
                "num_hidden_layers is {} but {} holds {layers} layers; the config does not \
                 belong to these weights",
                config.num_hidden_layers,
                weights.display()
            ),
        });
    }
    Ok(())
}

fn fingerprint(weights: &Path, config: &BertConfig, extra: &str) -> Result<String> {
    let mut file = std::fs::File::open(weights).map_err(|source| Error::Io {
        path: weights.into(),
        source,
    })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| Error::Io {
        path: weights.into(),
        source,
    })?;
    hasher.update(serde_json::to_vec(config).unwrap_or_default());
    hasher.update(extra.as_bytes());
    Ok(format!("{:x}", hasher.finalize()))
}

impl Encoder {
    /// Loads a model from a directory, or from the hub when `spec` is not a directory.
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self> {
        let dir = crate::hub::resolve(spec)?;
        Self::load_dir(&dir, opts)
    }

    pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::load_dir_inner(dir, opts, None)
    }

    fn load_dir_inner(
        dir: &Path,
        opts: &LoadOptions,
        varmap: Option<&candle_nn::VarMap>,
    ) -> Result<Self> {
        for (file, name) in [
            ("config.json", "config.json"),
            ("tokenizer.json", "tokenizer.json"),
            ("model.safetensors", "model.safetensors"),
        ] {
            if !dir.join(file).exists() {
                return Err(Error::MissingFile {
                    path: dir.into(),
                    file: name,
                });
            }
        }
        let config_path = dir.join("config.json");
        let config: BertConfig = read_json(&config_path)?;
        let config_err = |message: String| Error::Config {
            path: config_path.clone(),
            message,
        };
        if config.position_embedding_type != "absolute" {
            return Err(config_err(format!(
                "position_embedding_type {:?} is not supported (absolute only)",
                config.position_embedding_type
            )));
        }
        if !matches!(config.hidden_act.as_str(), "gelu" | "gelu_python") {
            return Err(config_err(format!(
                "hidden_act {:?} is not supported (gelu only)",
                config.hidden_act
            )));
        }
        // A zero or negative epsilon divides by zero in every layer norm of a constant
        // row, and a model that loads then embeds everything to NaN (bench/fuzz found
        // `-12` for `1e-12`); transformers would fail the same way, later.
        if !(config.layer_norm_eps.is_finite() && config.layer_norm_eps > 0.0) {
            return Err(config_err(format!(
                "layer_norm_eps {} must be a positive number (BERT's is 1e-12)",
                config.layer_norm_eps
            )));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(config_err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        let modules: Vec<ModuleEntry> = read_optional_json(&dir.join("modules.json"))?;
        let pool_path = pooling_dir(dir, &modules).join("config.json");
        let pooling_cfg: PoolingConfig = read_optional_json(&pool_path)?;
        let pooling = pooling_cfg.mode().map_err(|message| Error::Config {
            path: pool_path.clone(),
            message,
        })?;
        let st: SentenceBertConfig = read_optional_json(&dir.join("sentence_bert_config.json"))?;
        let prompts = Prompts::load(dir, opts.query_prompt.clone(), opts.document_prompt.clone())?;
        // sentence-transformers leaves a prompt's tokens out of the pooling when a model
        // says `include_prompt: false` (INSTRUCTOR-style); sieve pools every token, so such
        // a model with prompts would embed differently: refused rather than wrong.
        if pooling_cfg.include_prompt == Some(false) && prompts.any() {
            return Err(Error::Config {
                path: pool_path,
                message: "include_prompt false (prompt tokens left out of the pooling) is not \
                          supported with prompts; run without prompts or pool them in"
                    .into(),
            });
        }
        let max_seq_length = opts
            .max_seq_length
            .or(st.max_seq_length)
            .unwrap_or(FALLBACK_MAX_SEQ_LENGTH)
            .min(config.max_position_embeddings);

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Tokenizer {
            path: tok_path.clone(),
            message: e.to_string(),
        })?;
        // tokenizer.json files often carry the exporter's truncation and fixed padding
        // (all-MiniLM-L6-v2: 128 and pad-to-128); sieve decides both itself.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None::<PaddingParams>);

        let weights = dir.join("model.safetensors");
        check_layers(&weights, &config)?;
        let vb = match varmap {
            // SAFETY: the file is memory-mapped read-only; sieve never writes to a model it
            // is reading, and candle copies tensors out of the map.
            None => unsafe {
                VarBuilder::from_mmaped_safetensors(
                    std::slice::from_ref(&weights),
                    opts.dtype,
                    &opts.device,
                )?
            },
            Some(varmap) => {
                let tensors = candle_core::safetensors::load(&weights, &opts.device)?;
                let mut data = varmap
                    .data()
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
                for (name, t) in tensors {
                    // Integer buffers (position_ids in some checkpoints) are not weights.
                    if t.dtype().is_float() {
                        data.insert(
                            name,
                            candle_core::Var::from_tensor(&t.to_dtype(opts.dtype)?)?,
                        );
                    }
                }
                drop(data);
                VarBuilder::from_varmap(varmap, opts.dtype, &opts.device)
            }
        };
        let model = BertModel::load(vb, &config)?.with_compute(opts.compute_dtype);
        // Weights read from the file for inference never change: Q|K|V stacked once.
        let model = if varmap.is_none() {
            model.stack_qkv()?
        } else {
            model
        };
        // Half-precision compute changes the embeddings, so caches must tell them apart.
        let compute = match opts.compute_dtype.filter(|&c| c != opts.dtype) {
            Some(c) => format!("|compute={c:?}"),
            None => String::new(),
        };
        let fingerprint = fingerprint(
            &weights,
            &config,
            &format!("{pooling:?}|{max_seq_length}|{}{compute}", opts.normalize),
        )?;
        Ok(Self {
            model,
            tokenizer,
            pooling,
            max_seq_length,
            normalize: opts.normalize,
            device: opts.device.clone(),
            dtype: opts.dtype,
            dir: dir.into(),
            fingerprint,
            prompts,
        })
    }

    /// Loads a model whose weights are trainable: every float tensor of
    /// `model.safetensors` becomes a `Var` in the returned map (by its file name), so
    /// that the map can be handed to an optimiser and saved under the same names.
    pub fn load_trainable(dir: &Path, opts: &LoadOptions) -> Result<(Self, candle_nn::VarMap)> {
        let varmap = candle_nn::VarMap::new();
        let encoder = Self::load_dir_inner(dir, opts, Some(&varmap))?;
        Ok((encoder, varmap))
    }

    /// The same encoder over `weights` (name → tensor, as in `model.safetensors`), with
    /// `fingerprint` naming them: a frozen snapshot of a model being trained, for
    /// evaluation without building a backward graph.
    pub fn with_weights(
        &self,
        weights: std::collections::HashMap<String, Tensor>,
        fingerprint: String,
    ) -> Result<Self> {
        let vb = VarBuilder::from_tensors(weights, self.dtype, &self.device);
        let model = BertModel::load(vb, self.model.config())?
            .with_compute(Some(self.model.compute_dtype()));
        Ok(Self {
            model,
            tokenizer: self.tokenizer.clone(),
            pooling: self.pooling,
            max_seq_length: self.max_seq_length,
            normalize: self.normalize,
            device: self.device.clone(),
            dtype: self.dtype,
            dir: self.dir.clone(),
            fingerprint,
            prompts: self.prompts.clone(),
        })
    }

    /// The prompts prepended by role ([`Prompts`]).
    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// [`Self::encode`] of `texts` as `role`: with its prompt in front, as
    /// sentence-transformers' `encode_query` / `encode_document` / `encode` do.
    pub fn encode_as(
        &self,
        role: Role,
        texts: &[&str],
        batch_size: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Embeddings> {
        if self.prompts.prompt(role).is_empty() {
            return self.encode(texts, batch_size, progress);
        }
        let prompted = self.prompts.apply(role, texts);
        let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
        self.encode(&refs, batch_size, progress)
    }

    /// [`Self::tokenize`] of `texts` as `role` (its prompt in front).
    pub fn tokenize_as(&self, role: Role, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        if self.prompts.prompt(role).is_empty() {
            return self.tokenize(texts);
        }
        let prompted = self.prompts.apply(role, texts);
        let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
        self.tokenize(&refs)
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalize(&self) -> bool {
        self.normalize
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dim(&self) -> usize {
        self.model.config().hidden_size
    }
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn model(&self) -> &BertModel {
        &self.model
    }
    /// Hex SHA-256 over weights, config, pooling, max length and normalisation.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Token ids with special tokens, truncated to `max_seq_length`.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Builds `(ids, mask)` tensors for a batch, padded to its longest member.
    pub fn batch_tensors(&self, batch: &[&[u32]]) -> Result<(Tensor, Tensor)> {
        let seq = batch.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let pad = self.model.config().pad_token_id;
        let mut ids = Vec::with_capacity(batch.len() * seq);
        let mut mask = Vec::with_capacity(batch.len() * seq);
        for tokens in batch {
            ids.extend_from_slice(tokens);
            ids.extend(std::iter::repeat_n(pad, seq - tokens.len()));
            mask.extend(std::iter::repeat_n(1f32, tokens.len()));
            mask.extend(std::iter::repeat_n(0f32, seq - tokens.len()));
        }
        let ids = Tensor::from_vec(ids, (batch.len(), seq), &self.device)?;
        let mask =
            Tensor::from_vec(mask, (batch.len(), seq), &self.device)?.to_dtype(self.dtype)?;
        Ok((ids, mask))
    }

    /// Whether [`Self::embed_tokens`] packs its batches (computes no padding).
    pub fn packs_batches(&self) -> bool {
        self.model.supports_packed() && crate::model::packing_enabled()
    }

    /// Pooled (and normalised) embeddings of already-tokenised texts, `(batch, dim)`.
    /// Differentiable when the model holds `Var`s; the graph is what training uses.
    ///
    /// On the CPU in f32/f64 the batch is packed: no padding is computed, in the
    /// forward or the backward ([`crate::model::Packed`]). `SIEVE_PACKING=off` pads it
    /// as on other devices (to measure what packing gains).
    pub fn embed_tokens(&self, batch: &[&[u32]]) -> Result<Tensor> {
        let pooled = if self.packs_batches() && batch.iter().all(|t| !t.is_empty()) {
            let packed = Packed::new(batch, &self.device)?;
            let states = self.model.forward_packed(&packed)?;
            pool_packed(&states, &packed.lens, self.pooling)?
        } else {
            let (ids, mask) = self.batch_tensors(batch)?;
            let states = self.model.forward(&ids, &mask)?;
            pool(&states, &mask, self.pooling)?
        };
        if self.normalize {
            Ok(l2_normalize(&pooled)?)
        } else {
            Ok(pooled)
        }
    }

    /// Embeds `texts` in batches of `batch_size`, longest first (as sentence-transformers
    /// does) so that each batch pads little. `progress` is called with the number of
    /// texts each finished batch held.
    pub fn encode(
        &self,
        texts: &[&str],
        batch_size: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Embeddings> {
        let dim = self.dim();
        let batch_size = batch_size.max(1);
        let mut data = vec![0f32; texts.len() * dim];
        for (chunk_idx, chunk) in texts.chunks(TOKENIZE_CHUNK).enumerate() {
            let tokens = self.tokenize(chunk)?;
            let mut order: Vec<usize> = (0..chunk.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
            let batches: Vec<&[usize]> = order.chunks(batch_size).collect();
            let run = |idx: &&[usize]| -> Result<Vec<f32>> {
                let batch: Vec<&[u32]> = idx.iter().map(|&i| tokens[i].as_slice()).collect();
                let emb = self.embed_tokens(&batch)?;
                let rows = emb
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                progress(idx.len());
                Ok(rows)
            };
            // On the CPU batches run concurrently: candle's element-wise ops are
            // single-threaded, so two batches in flight keep both cores busy between
            // matrix products. A GPU runs one stream: batches in turn.
            let results: Vec<Result<Vec<f32>>> = if self.device.is_cpu() {
                batches.par_iter().with_max_len(1).map(run).collect()
            } else {
                batches.iter().map(run).collect()
            };
            let base = chunk_idx * TOKENIZE_CHUNK;
            for (idx, rows) in batches.iter().zip(results) {
                let rows = rows?;
                for (j, &i) in idx.iter().enumerate() {
                    let dst = (base + i) * dim;
                    data[dst..dst + dim].copy_from_slice(&rows[j * dim..(j + 1) * dim]);
                }
            }
        }
        Ok(Embeddings { data, dim })
    }
}
