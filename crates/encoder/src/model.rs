//! A BERT-family encoder whose forward pass is the one training differentiates.
//!
//! Activations are kept as `(tokens, hidden)` matrices between layers so that every
//! linear layer is a single 2-D matrix product; Q, K and V are computed by one product
//! with the three weight matrices stacked, which `cat` keeps differentiable.

use candle_core::{Module, Result, Tensor, D};
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
        ops::linear(x, &self.weight, &self.bias)
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
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
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

#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
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
            query: Linear::load(att.pp("self.query"), h, h)?,
            key: Linear::load(att.pp("self.key"), h, h)?,
            value: Linear::load(att.pp("self.value"), h, h)?,
            attn_out: Linear::load(att.pp("output.dense"), h, h)?,
            attn_norm: LayerNorm::load(att.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: Linear::load(vb.pp("intermediate.dense"), h, c.intermediate_size)?,
            output: Linear::load(vb.pp("output.dense"), c.intermediate_size, h)?,
            out_norm: LayerNorm::load(vb.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
            heads: c.num_attention_heads,
        })
    }

    /// `x`: `(batch * seq, hidden)`; `mask`: `(batch, seq)`, 1 for tokens, 0 for padding.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let w = Tensor::cat(
            &[&self.query.weight, &self.key.weight, &self.value.weight],
            0,
        )?;
        let b = Tensor::cat(&[&self.query.bias, &self.key.bias, &self.value.bias], 0)?;
        let qkv = ops::linear(x, &w, &b)?;
        let ctx = ops::attention(&qkv, mask, self.heads)?;
        let x = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx)? + x)?)?;
        let inner = ops::gelu(&self.intermediate.forward(&x)?)?;
        self.out_norm.forward(&(self.output.forward(&inner)? + x)?)
    }
}

/// The transformer without the pooler head (embedding models never use it).
#[derive(Debug, Clone)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    config: BertConfig,
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
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Token states `(batch, seq, hidden)` for `input_ids` `(batch, seq)` (u32) and an
    /// `attention_mask` `(batch, seq)` of 1 (token) / 0 (padding) in the model dtype.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let mut x = self.embeddings.forward(input_ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, attention_mask)?;
        }
        x.reshape((batch, seq, self.config.hidden_size))
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
