//! A BERT-family encoder whose forward pass is the one training differentiates.
//!
//! Activations are kept as `(tokens, hidden)` matrices between layers so that every
//! linear layer is a single 2-D matrix product; Q, K and V are computed by one product
//! with the three weight matrices stacked, which `cat` keeps differentiable.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::BertConfig;
use crate::ops;

/// Added to attention scores of padding positions; far below any real score, yet finite
/// so that `0 * MASK` stays 0 in every dtype.
pub(crate) const MASK_VALUE: f64 = -1e9;

/// `y = x W^T + b` on a 2-D input.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: vb.get(out_dim, "bias")?,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear_in(x, &self.weight, &self.bias, self.weight.dtype())
    }
}

/// `x Wᵀ + b` computed in `dtype`: under mixed precision the f32 activations and master
/// weights are cast for the product (the casts are differentiable, so the weights'
/// gradients arrive in f32), and the product stays in `dtype`.
fn linear_in(x: &Tensor, w: &Tensor, b: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype && w.dtype() == dtype {
        ops::linear(x, w, b)
    } else {
        ops::linear(
            &x.to_dtype(dtype)?,
            &w.to_dtype(dtype)?,
            &b.to_dtype(dtype)?,
        )
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        // Checkpoints converted from TF name these gamma/beta.
        let (w, b) = if vb.contains_tensor("gamma") && !vb.contains_tensor("weight") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Self {
            weight: vb.get(dim, w)?,
            bias: vb.get(dim, b)?,
            eps,
        })
    }

    /// `forward(x + residual)`: one fused pass under inference when the dtypes agree
    /// ([`ops::add_layer_norm`]); the sum is formed in `residual`'s dtype otherwise, as
    /// the residual stream's.
    fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let dtype = self.weight.dtype();
        if x.dtype() == dtype && residual.dtype() == dtype {
            ops::add_layer_norm(x, residual, &self.weight, &self.bias, self.eps)
        } else {
            self.forward(&(x.to_dtype(residual.dtype())? + residual)?)
        }
    }

    /// `forward(linear(x) + residual)` with the linear layer computed in `compute`: one
    /// fused op ([`ops::linear_add_layer_norm`]) when nothing is cast, else the linear
    /// layer and [`Self::forward_residual`].
    fn forward_linear_residual(
        &self,
        linear: &Linear,
        x: &Tensor,
        residual: &Tensor,
        compute: DType,
    ) -> Result<Tensor> {
        let dtype = self.weight.dtype();
        if [x.dtype(), residual.dtype(), linear.weight.dtype(), compute]
            .iter()
            .all(|&d| d == dtype)
        {
            ops::linear_add_layer_norm(
                x,
                &linear.weight,
                &linear.bias,
                residual,
                &self.weight,
                &self.bias,
                self.eps,
            )
        } else {
            let y = linear_in(x, &linear.weight, &linear.bias, compute)?;
            self.forward_residual(&y, residual)
        }
    }
}

impl Module for LayerNorm {
    /// In the weights' dtype, whatever `x`'s: under mixed precision layer norm runs and
    /// returns f32, as under PyTorch's autocast (its mean and variance lose too much in
    /// bf16), which keeps the residual stream in f32.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(
            &x.to_dtype(self.weight.dtype())?,
            &self.weight,
            &self.bias,
            self.eps,
        )
    }
}

#[derive(Debug, Clone)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        Ok(Self {
            word: vb.get((c.vocab_size, c.hidden_size), "word_embeddings.weight")?,
            position: vb.get(
                (c.max_position_embeddings, c.hidden_size),
                "position_embeddings.weight",
            )?,
            token_type: vb.get(
                (c.type_vocab_size, c.hidden_size),
                "token_type_embeddings.weight",
            )?,
            norm: LayerNorm::load(vb.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
        })
    }

    /// `(tokens,)` ids at `(tokens,)` positions → `(tokens, hidden)`, for packed
    /// sequences. Token type is always 0.
    fn forward_packed(&self, p: &Packed) -> Result<Tensor> {
        let words = self.word.embedding(&p.ids)?;
        let positions = self.position.embedding(&p.positions)?;
        let token_type = self.token_type.narrow(0, 0, 1)?;
        let x = (words + positions)?.broadcast_add(&token_type)?;
        self.norm.forward(&x)
    }

    /// `(batch, seq)` ids → `(batch * seq, hidden)`. Token type is always 0: embedding
    /// models encode one segment.
    fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let hidden = self.word.dim(1)?;
        let words = self.word.embedding(&input_ids.flatten_all()?)?;
        let words = words.reshape((batch, seq, hidden))?;
        let positions = self.position.narrow(0, 0, seq)?;
        let token_type = self.token_type.narrow(0, 0, 1)?;
        let x = words
            .broadcast_add(&positions)?
            .broadcast_add(&token_type)?
            .reshape((batch * seq, hidden))?;
        self.norm.forward(&x)
    }
}

/// How a batch's sequences lie in the rows of the activations.
#[derive(Clone, Copy)]
enum SeqLayout<'a> {
    /// Each padded to the batch's longest; the `(batch, seq)` mask marks the tokens.
    Padded(&'a Tensor),
    /// Back to back with no padding, of these lengths.
    Packed(&'a [usize]),
}

/// The Q, K and V projections.
#[derive(Debug, Clone)]
enum Qkv {
    /// As stored; stacked into one product on every forward, which differentiates
    /// through the stacking and sees weights that change in place (training, and
    /// snapshots sharing the weights of a model being trained).
    Separate {
        query: Linear,
        key: Linear,
        value: Linear,
    },
    /// Stacked once into one `(3 * hidden, hidden)` layer ([`BertModel::stack_qkv`]),
    /// for weights that never change: no copy of 3 × hidden² weights per forward, and
    /// the separate ones are not kept beside it.
    Stacked(Linear),
}

impl Qkv {
    fn stacked(&self) -> Result<Linear> {
        match self {
            Qkv::Stacked(l) => Ok(l.clone()),
            Qkv::Separate { query, key, value } => Ok(Linear {
                weight: Tensor::cat(&[&query.weight, &key.weight, &value.weight], 0)?,
                bias: Tensor::cat(&[&query.bias, &key.bias, &value.bias], 0)?,
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    qkv: Qkv,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let att = vb.pp("attention");
        Ok(Self {
            qkv: Qkv::Separate {
                query: Linear::load(att.pp("self.query"), h, h)?,
                key: Linear::load(att.pp("self.key"), h, h)?,
                value: Linear::load(att.pp("self.value"), h, h)?,
            },
            attn_out: Linear::load(att.pp("output.dense"), h, h)?,
            attn_norm: LayerNorm::load(att.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: Linear::load(vb.pp("intermediate.dense"), h, c.intermediate_size)?,
            output: Linear::load(vb.pp("output.dense"), c.intermediate_size, h)?,
            out_norm: LayerNorm::load(vb.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
            heads: c.num_attention_heads,
        })
    }

    /// `x`: `(rows, hidden)`, the sequences laid out as `seqs` says. One layer; the
    /// products (Q|K|V, attention, output, feed-forward) run in `compute`, the residual
    /// stream and layer norms in the weights' dtype.
    fn forward(&self, x: &Tensor, seqs: SeqLayout, compute: DType) -> Result<Tensor> {
        let qkv = self.qkv.stacked()?;
        let qkv = linear_in(x, &qkv.weight, &qkv.bias, compute)?;
        let ctx = match seqs {
            SeqLayout::Padded(mask) => ops::attention(&qkv, mask, self.heads)?,
            SeqLayout::Packed(lens) => ops::attention_packed(&qkv, lens, self.heads)?,
        };
        let x = self
            .attn_norm
            .forward_linear_residual(&self.attn_out, &ctx, x, compute)?;
        let inner = if x.dtype() == compute && self.intermediate.weight.dtype() == compute {
            ops::linear_gelu(&x, &self.intermediate.weight, &self.intermediate.bias)?
        } else {
            ops::gelu_owned(linear_in(
                &x,
                &self.intermediate.weight,
                &self.intermediate.bias,
                compute,
            )?)?
        };
        self.out_norm
            .forward_linear_residual(&self.output, &inner, &x, compute)
    }
}

/// The transformer without the pooler head (embedding models never use it).
#[derive(Debug, Clone)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    config: BertConfig,
    /// Mixed precision: the layers' products compute in this dtype (bf16, f16) from
    /// weights kept in theirs (f32 masters); layer norms, the residual stream and the
    /// output stay in the weights' dtype. `None` computes everything in the weights'.
    compute: Option<DType>,
}

impl BertModel {
    /// Loads weights stored either at the root (`embeddings.…`, as sentence-transformers
    /// saves them) or under a `bert.` prefix (as `BertForMaskedLM` checkpoints do).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let vb = if !vb.contains_tensor("embeddings.word_embeddings.weight")
            && vb.contains_tensor("bert.embeddings.word_embeddings.weight")
        {
            vb.pp("bert")
        } else {
            vb
        };
        let embeddings = Embeddings::load(vb.pp("embeddings"), config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            config: config.clone(),
            compute: None,
        })
    }

    /// Stacks each layer's Q, K and V projections once, for a model whose weights never
    /// change (inference from a file). Not for trainable weights, nor for a snapshot
    /// sharing their storage: their stacked copy would keep the values of this moment.
    pub fn stack_qkv(mut self) -> Result<Self> {
        for layer in &mut self.layers {
            layer.qkv = Qkv::Stacked(layer.qkv.stacked()?);
        }
        Ok(self)
    }

    /// The same model computing in `dtype` (mixed precision), or in its weights' dtype
    /// for `None` or the weights' own dtype.
    pub fn with_compute(mut self, dtype: Option<DType>) -> Self {
        self.compute = dtype.filter(|&d| d != self.embeddings.word.dtype());
        self
    }

    /// The dtype the layers compute in.
    pub fn compute_dtype(&self) -> DType {
        self.compute.unwrap_or(self.embeddings.word.dtype())
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Token states `(batch, seq, hidden)` for `input_ids` `(batch, seq)` (u32) and an
    /// `attention_mask` `(batch, seq)` of 1 (token) / 0 (padding) in the model dtype.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let compute = self.compute_dtype();
        let mut x = self.embeddings.forward(input_ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, SeqLayout::Padded(attention_mask), compute)?;
        }
        // The last layer norm leaves x in the weights' dtype: pooling, normalisation and
        // the loss run in f32 under mixed precision.
        x.reshape((batch, seq, self.config.hidden_size))
    }

    /// Whether [`Self::forward_packed`] can run: its attention is the fused CPU kernel
    /// (f32/f64 compute on the CPU). Elsewhere batches are padded.
    pub fn supports_packed(&self) -> bool {
        self.embeddings.word.device().is_cpu()
            && matches!(self.compute_dtype(), DType::F32 | DType::F64)
    }

    /// Token states `(tokens, hidden)` of packed sequences: the rows of
    /// [`Self::forward`]'s output that are not padding, computed without the padding.
    pub fn forward_packed(&self, p: &Packed) -> Result<Tensor> {
        if !self.supports_packed() {
            candle_core::bail!(
                "packed batches need f32/f64 compute on the CPU; pad the batch instead"
            );
        }
        if let Some(&n) = p.lens.iter().max() {
            if n > self.config.max_position_embeddings {
                candle_core::bail!(
                    "a sequence of {n} tokens is longer than the model's {} positions",
                    self.config.max_position_embeddings
                );
            }
        }
        let compute = self.compute_dtype();
        let mut x = self.embeddings.forward_packed(p)?;
        for layer in &self.layers {
            x = layer.forward(&x, SeqLayout::Packed(&p.lens), compute)?;
        }
        Ok(x)
    }
}

/// A batch of token-id sequences laid back to back with no padding: the layout in
/// which [`BertModel::forward_packed`] computes only real tokens. Every layer but
/// attention works row by row, and attention runs per sequence anyway, so padding is
/// pure waste: a batch padded to its longest member spends every shorter member's
/// remainder on it, in each product of the forward and the backward
/// (text-embeddings-inference batches without padding the same way).
#[derive(Debug, Clone)]
pub struct Packed {
    /// `(tokens,)` u32 token ids.
    pub ids: Tensor,
    /// `(tokens,)` u32 position of each token in its sequence.
    pub positions: Tensor,
    /// Each sequence's length, in batch order.
    pub lens: Vec<usize>,
}

impl Packed {
    pub fn new(batch: &[&[u32]], device: &candle_core::Device) -> Result<Self> {
        let total: usize = batch.iter().map(|t| t.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        for tokens in batch {
            ids.extend_from_slice(tokens);
            positions.extend(0..tokens.len() as u32);
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, total, device)?,
            positions: Tensor::from_vec(positions, total, device)?,
            lens: batch.iter().map(|t| t.len()).collect(),
        })
    }
}

/// Whether batches are packed where the model can: on unless `SIEVE_PACKING=off`
/// (read once), the switch that lets a benchmark measure padded batches in the same
/// build.
pub fn packing_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !std::env::var("SIEVE_PACKING").is_ok_and(|v| v.eq_ignore_ascii_case("off") || v == "0")
    })
}

/// Pools packed token states `(tokens, hidden)` into `(batch, hidden)`, as [`pool`]
/// pools the padded ones. Mean pooling is one product with a `(batch, tokens)` matrix
/// of `1 / len` blocks (differentiable, and a sequence of no tokens pools to zero as
/// under the padded mask); CLS takes each sequence's first row.
pub fn pool_packed(states: &Tensor, lens: &[usize], mode: crate::Pooling) -> Result<Tensor> {
    let total: usize = lens.iter().sum();
    let device = states.device();
    match mode {
        crate::Pooling::Cls => {
            if lens.contains(&0) {
                candle_core::bail!("CLS pooling of an empty sequence");
            }
            let mut offset = 0u32;
            let firsts: Vec<u32> = lens
                .iter()
                .map(|&n| {
                    let o = offset;
                    offset += n as u32;
                    o
                })
                .collect();
            states.index_select(&Tensor::new(firsts, device)?, 0)
        }
        crate::Pooling::Mean => {
            fn blocks<T: candle_core::WithDType>(lens: &[usize], total: usize) -> Vec<T> {
                let mut weights = vec![T::zero(); lens.len() * total];
                let mut offset = 0;
                for (b, &n) in lens.iter().enumerate() {
                    let w = T::from_f64(1.0 / (n as f64).max(1e-9));
                    weights[b * total + offset..b * total + offset + n].fill(w);
                    offset += n;
                }
                weights
            }
            let shape = (lens.len(), total);
            let weights = match states.dtype() {
                DType::F64 => Tensor::from_vec(blocks::<f64>(lens, total), shape, device)?,
                dtype => {
                    Tensor::from_vec(blocks::<f32>(lens, total), shape, device)?.to_dtype(dtype)?
                }
            };
            weights.matmul(states)
        }
    }
}

/// Pools token states `(batch, seq, hidden)` into `(batch, hidden)`.
pub fn pool(states: &Tensor, attention_mask: &Tensor, mode: crate::Pooling) -> Result<Tensor> {
    match mode {
        crate::Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1),
        crate::Pooling::Mean => {
            let mask = attention_mask
                .to_dtype(states.dtype())?
                .unsqueeze(D::Minus1)?;
            let summed = states.broadcast_mul(&mask)?.sum(1)?;
            // sentence-transformers clamps the token count at 1e-9.
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)
        }
    }
}
