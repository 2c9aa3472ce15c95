//! The gradient of one batch: directly, or with GradCache when the batch is larger
//! than what fits in memory with a graph.
//!
//! GradCache (Gao et al., 2021): embed the batch in mini-batches without keeping a
//! graph, compute the loss and its gradient `G = ∂L/∂E` with respect to the embeddings,
//! then re-run each mini-batch with a graph and back-propagate the surrogate `⟨E, G⟩`.
//! The parameter gradients equal the full batch's (the forward is deterministic: no
//! dropout), while memory holds one mini-batch's activations. Texts are sorted by
//! length before they are cut into mini-batches, so each pads little.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, TensorId, Var};

use crate::distributed::{gather_rows, share, Collective};
use crate::loss::{contrastive_loss, CellTable, LossConfig};

/// Anything that turns token ids into embeddings `(texts, dim)` with a graph back to
/// its parameters.
pub trait Embed {
    fn embed(&self, tokens: &[&[u32]]) -> Result<Tensor>;

    /// Whether a batch of mixed lengths costs only its tokens (packed, no padding), so
    /// that cutting it by length gains nothing.
    fn packs(&self) -> bool {
        false
    }
}

impl Embed for sieve_encoder::Encoder {
    fn embed(&self, tokens: &[&[u32]]) -> Result<Tensor> {
        self.embed_tokens(tokens).map_err(|e| match e {
            sieve_encoder::Error::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }

    fn packs(&self) -> bool {
        self.packs_batches()
    }
}

/// A chunk is closed early when the next text is shorter than this fraction of the
/// chunk's longest: past it, padding would cost more than a smaller matrix product.
/// A model that packs its batches pads nothing, and its chunks are cut by count only.
const MIN_FILL: f64 = 0.5;

/// Indices of `tokens` longest first, cut into chunks of at most `chunk` texts, and
/// also where lengths fall below `min_fill` of the chunk's longest (short queries
/// are never padded to a long document's length).
fn length_chunks(tokens: &[&[u32]], chunk: usize, min_fill: f64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        if let Some(&first) = current.first() {
            let longest = tokens[first].len() as f64;
            if current.len() >= chunk.max(1) || (tokens[i].len() as f64) < min_fill * longest {
                chunks.push(std::mem::take(&mut current));
            }
        }
        current.push(i);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// [`MIN_FILL`] for a model that pads its batches, 0 (no cut by length) for one that
/// packs them.
fn min_fill(model: &dyn Embed) -> f64 {
    if model.packs() {
        0.0
    } else {
        MIN_FILL
    }
}

/// Embeds `tokens` in length-sorted chunks and puts the rows back in input order;
/// differentiable (`cat` and `index_select` have backwards). Sorting pays even with a
/// graph: a long document no longer pads every short query to its length.
pub fn embed_bucketed(model: &dyn Embed, tokens: &[&[u32]], chunk: usize) -> Result<Tensor> {
    let chunks = length_chunks(tokens, chunk, min_fill(model));
    embed_in_order(model, tokens, &chunks, true)
}

/// `texts` embedded chunk by chunk (with their graph, or detached), the rows put back in
/// input order.
fn embed_in_order(
    model: &dyn Embed,
    texts: &[&[u32]],
    chunks: &[Vec<usize>],
    graph: bool,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(chunks.len());
    for idx in chunks {
        let batch: Vec<&[u32]> = idx.iter().map(|&i| texts[i]).collect();
        let e = model.embed(&batch)?;
        parts.push(if graph { e } else { e.detach() });
    }
    let sorted = Tensor::cat(&parts, 0)?;
    let mut inverse = vec![0u32; texts.len()];
    for (pos, &i) in chunks.iter().flatten().enumerate() {
        inverse[i] = pos as u32;
    }
    let inverse = Tensor::from_vec(inverse, texts.len(), sorted.device())?;
    sorted.index_select(&inverse, 0)
}

/// The loss of one batch and the gradients of `params`.
pub struct BatchGrads {
    pub loss: f64,
    pub grads: ParamGrads,
    /// The documents' embeddings before the update (the exact softmax writes them back
    /// into its table).
    pub documents: Tensor,
    /// The queries' embeddings before the update (the false-negative dose reads them).
    pub queries: Tensor,
}

/// Gradients of the trained parameters only, which can be summed across backward
/// passes (candle's `GradStore` cannot be created empty outside candle).
#[derive(Debug, Clone, Default)]
pub struct ParamGrads(HashMap<TensorId, Tensor>);

impl ParamGrads {
    /// Keeps the parameters' gradients out of a backward pass's store.
    pub fn from_store(mut all: GradStore, params: &[Var]) -> Self {
        let mut kept = HashMap::with_capacity(params.len());
        for p in params {
            if let Some(g) = all.remove(p.as_tensor()) {
                kept.insert(p.as_tensor().id(), g);
            }
        }
        Self(kept)
    }

    /// Adds `other` in.
    pub fn accumulate(&mut self, other: ParamGrads) -> Result<()> {
        for (id, g) in other.0 {
            let sum = match self.0.remove(&id) {
                Some(old) => (old + g)?,
                None => g,
            };
            self.0.insert(id, sum);
        }
        Ok(())
    }

    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }

    /// Sums every rank's gradients ([`Collective::all_reduce_sum`]) in one flat buffer,
    /// in `params`' order (the same on every rank). A parameter a rank has no gradient
    /// for sends zeros and stays without one there (every rank runs the same graph, so
    /// such a parameter, BERT's unused pooler, has none anywhere, and AdamW leaves it
    /// alone as in one process).
    pub fn all_reduce(&mut self, world: &dyn Collective, params: &[Var]) -> Result<()> {
        if world.world_size() == 1 || params.is_empty() {
            return Ok(());
        }
        let mut flat = Vec::with_capacity(params.len());
        for p in params {
            let t = p.as_tensor();
            let g = match self.0.get(&t.id()) {
                Some(g) => g.flatten_all()?,
                None => Tensor::zeros(t.elem_count(), t.dtype(), t.device())?,
            };
            flat.push(g);
        }
        let sum = world.all_reduce_sum(&Tensor::cat(&flat, 0)?)?;
        let mut at = 0;
        for p in params {
            let t = p.as_tensor();
            let n = t.elem_count();
            if let Some(g) = self.0.get_mut(&t.id()) {
                *g = sum.narrow(0, at, n)?.reshape(t.shape())?;
            }
            at += n;
        }
        Ok(())
    }

    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        self.0.insert(t.id(), g);
    }

    /// The global L2 norm of every gradient, in f64. The per-tensor sums stay on the
    /// gradients' device and are read back once: on a GPU each read is a synchronisation,
    /// and a BERT has a hundred tensors.
    pub fn norm(&self) -> Result<f64> {
        let sums = self
            .0
            .values()
            .map(|g| g.to_dtype(candle_core::DType::F64)?.sqr()?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        if sums.is_empty() {
            return Ok(0.0);
        }
        let sq = Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f64>()?;
        Ok(sq.sqrt())
    }

    /// Scales every gradient so that the global norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does; returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.norm()?;
        if norm.is_finite() && norm > max_norm {
            let factor = max_norm / (norm + 1e-6);
            for g in self.0.values_mut() {
                *g = (&*g * factor)?;
            }
        }
        Ok(norm)
    }
}

impl crate::optim::GradSource for ParamGrads {
    fn grad(&self, t: &Tensor) -> Option<&Tensor> {
        self.get(t)
    }
}

/// Which side of the loss a step moves the model through.
///
/// With one encoder for queries and documents, "freezing" a side means its embeddings
/// enter the loss as constants (detached): the step's gradient is the part that flows
/// through the other side only, and the two parts add up to the full gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Both,
    /// Gradient through the queries; the documents (and the corpus table) held fixed.
    Queries,
    /// Gradient through the batch's documents; the queries held fixed.
    Documents,
}

impl Side {
    /// (queries, documents) with the frozen side detached.
    pub fn apply(self, queries: &Tensor, documents: &Tensor) -> (Tensor, Tensor) {
        match self {
            Side::Both => (queries.clone(), documents.clone()),
            Side::Queries => (queries.clone(), documents.detach()),
            Side::Documents => (queries.detach(), documents.clone()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Both => "both",
            Side::Queries => "query",
            Side::Documents => "document",
        }
    }
}

/// How to run one batch.
#[derive(Debug, Clone, Copy)]
pub struct StepConfig {
    pub loss: LossConfig,
    /// Texts embedded together; with GradCache also the texts per graph.
    pub mini_batch_size: usize,
    /// Use GradCache: without it every text of the batch is in one graph.
    pub grad_cache: bool,
}

/// The loss of the embeddings `e` (the first `b` rows the queries, the rest the
/// documents) and its gradient with respect to every row: GradCache's middle step, and
/// every rank's in a data-parallel one.
fn loss_and_gradient(
    loss_fn: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    e: &Tensor,
    b: usize,
) -> Result<(f64, Tensor)> {
    let loss = loss_fn(&e.narrow(0, 0, b)?, &e.narrow(0, b, e.dim(0)? - b)?)?;
    let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let g = loss.backward()?.get(e).cloned().ok_or_else(|| {
        candle_core::Error::Msg("GradCache: no gradient for the embeddings".into())
    })?;
    Ok((value, g))
}

/// GradCache's second pass: each chunk embedded again with a graph and ⟨E, G⟩
/// back-propagated, `g` holding the loss's gradient for every text (input order); the
/// parameter gradients summed over the chunks.
fn surrogate_gradients(
    model: &dyn Embed,
    params: &[Var],
    texts: &[&[u32]],
    chunks: &[Vec<usize>],
    g: &Tensor,
) -> Result<ParamGrads> {
    let mut total = ParamGrads::default();
    for idx in chunks {
        let batch: Vec<&[u32]> = idx.iter().map(|&i| texts[i]).collect();
        let ids = Tensor::from_vec(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            idx.len(),
            g.device(),
        )?;
        let surrogate = (model.embed(&batch)? * g.index_select(&ids, 0)?)?.sum_all()?;
        total.accumulate(ParamGrads::from_store(surrogate.backward()?, params))?;
    }
    Ok(total)
}

/// Gradients of the in-batch loss for `queries` and `documents` (token ids; the first
/// `queries.len()` documents are the positives) with respect to `params`.
pub fn batch_gradients(
    model: &dyn Embed,
    params: &[Var],
    queries: &[&[u32]],
    documents: &[&[u32]],
    table: &CellTable,
    config: &StepConfig,
) -> Result<BatchGrads> {
    let loss = |q: &Tensor, d: &Tensor| contrastive_loss(q, d, table, &config.loss);
    gradients_with(model, params, queries, documents, &loss, config)
}

/// Gradients of any loss of (query embeddings, document embeddings), directly or
/// with GradCache; the loss is evaluated once on the whole batch either way.
pub fn gradients_with(
    model: &dyn Embed,
    params: &[Var],
    queries: &[&[u32]],
    documents: &[&[u32]],
    loss_fn: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    config: &StepConfig,
) -> Result<BatchGrads> {
    let mut texts: Vec<&[u32]> = Vec::with_capacity(queries.len() + documents.len());
    texts.extend_from_slice(queries);
    texts.extend_from_slice(documents);
    let b = queries.len();
    if !config.grad_cache {
        let e = embed_bucketed(model, &texts, config.mini_batch_size)?;
        let docs = e.narrow(0, b, texts.len() - b)?;
        let loss = loss_fn(&e.narrow(0, 0, b)?, &docs)?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let all = loss.backward()?;
        return Ok(BatchGrads {
            loss: value,
            grads: ParamGrads::from_store(all, params),
            documents: docs.detach(),
            queries: e.narrow(0, 0, b)?.detach(),
        });
    }

    // 1. Embeddings without a graph, one mini-batch at a time.
    let chunks = length_chunks(&texts, config.mini_batch_size, min_fill(model));
    let e = Var::from_tensor(&embed_in_order(model, &texts, &chunks, false)?)?;

    // 2. The loss and its gradient with respect to the embeddings.
    let et = e.as_tensor();
    let (value, g) = loss_and_gradient(loss_fn, et, b)?;

    // 3. Each mini-batch again, with a graph, back-propagating ⟨E, G⟩.
    let total = surrogate_gradients(model, params, &texts, &chunks, &g.detach())?;
    Ok(BatchGrads {
        loss: value,
        grads: total,
        documents: et.narrow(0, b, texts.len() - b)?.detach(),
        queries: et.narrow(0, 0, b)?.detach(),
    })
}

/// [`gradients_with`] over the ranks of a data-parallel run ([`crate::distributed`]):
/// each rank embeds its share of `queries` and of `documents` (the same global batch on
/// every rank), the embeddings are all-gathered, every rank computes the whole batch's
/// loss and its gradient with respect to every embedding, back-propagates its own
/// share, and the parameter gradients are summed over the ranks. Every rank returns
/// the same loss, the whole batch's gradients and embeddings. With one rank this is
/// [`gradients_with`].
pub fn gradients_across(
    model: &dyn Embed,
    params: &[Var],
    queries: &[&[u32]],
    documents: &[&[u32]],
    loss_fn: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    config: &StepConfig,
    world: &dyn Collective,
) -> Result<BatchGrads> {
    let (rank, size) = (world.rank(), world.world_size());
    if size == 1 {
        return gradients_with(model, params, queries, documents, loss_fn, config);
    }
    let (b, m) = (queries.len(), documents.len());
    if b < size {
        candle_core::bail!("a batch of {b} queries cannot be shared by {size} ranks");
    }
    let (qs, ds) = (share(b, rank, size), share(m, rank, size));
    let mut own: Vec<&[u32]> = Vec::with_capacity(qs.len() + ds.len());
    own.extend_from_slice(&queries[qs.clone()]);
    own.extend_from_slice(&documents[ds.clone()]);
    let nq = qs.len();

    // 1. This rank's embeddings: with their graph, or (GradCache) without.
    let chunks = length_chunks(&own, config.mini_batch_size, min_fill(model));
    let e_own = if config.grad_cache {
        embed_in_order(model, &own, &chunks, false)?
    } else {
        embed_bucketed(model, &own, config.mini_batch_size)?
    };

    // 2. Every rank's embeddings; the whole batch's loss and its gradient.
    let qe = gather_rows(world, &e_own.narrow(0, 0, nq)?.detach(), b)?;
    let de = gather_rows(world, &e_own.narrow(0, nq, ds.len())?.detach(), m)?;
    let e = Var::from_tensor(&Tensor::cat(&[&qe, &de], 0)?)?;
    let et = e.as_tensor();
    let (value, g) = loss_and_gradient(loss_fn, et, b)?;
    let g_own = Tensor::cat(
        &[
            g.narrow(0, qs.start, nq)?,
            g.narrow(0, b + ds.start, ds.len())?,
        ],
        0,
    )?
    .detach();

    // 3. This rank's share of the gradient, back through its own texts.
    let mut grads = if config.grad_cache {
        surrogate_gradients(model, params, &own, &chunks, &g_own)?
    } else {
        let surrogate = (e_own * g_own)?.sum_all()?;
        ParamGrads::from_store(surrogate.backward()?, params)
    };

    // 4. The sum over ranks: the whole batch's gradient.
    grads.all_reduce(world, params)?;
    Ok(BatchGrads {
        loss: value,
        grads,
        documents: de,
        queries: qe,
    })
}
