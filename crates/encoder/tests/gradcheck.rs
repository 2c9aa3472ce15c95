//! Finite-difference proof that the forward pass is differentiable in every parameter.
//!
//! candle silently drops gradients through ops without a backward; this test fails if
//! any parameter kind (embeddings, layer norms, Q/K/V, attention output, feed-forward)
//! gets a gradient that disagrees with central differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use sieve_encoder::config::BertConfig;
use sieve_encoder::model::{pool, pool_packed, BertModel, Packed};
use sieve_encoder::ops::l2_normalize;
use sieve_encoder::Pooling;

fn tiny_config() -> BertConfig {
    BertConfig {
        vocab_size: 23,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        max_position_embeddings: 10,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        ..Default::default()
    }
}

struct Case {
    ids: Tensor,
    mask: Tensor,
    probe: Tensor,
    /// The same two sequences with no padding: the loss runs the packed path.
    packed: Option<Packed>,
}

fn case(dev: &Device, dim: usize, packed: bool) -> Case {
    // Two sequences, the second padded: the mask path must carry gradients correctly.
    let ids = Tensor::new(&[[1u32, 5, 7, 2, 9, 3], [1, 4, 2, 0, 0, 0]], dev).unwrap();
    let mask = Tensor::new(&[[1f64, 1., 1., 1., 1., 1.], [1., 1., 1., 0., 0., 0.]], dev).unwrap();
    let probe = Tensor::randn(0f64, 1., (2, dim), dev).unwrap();
    let packed = packed.then(|| Packed::new(&[&[1, 5, 7, 2, 9, 3], &[1, 4, 2]], dev).unwrap());
    Case {
        ids,
        mask,
        probe,
        packed,
    }
}

fn loss(model: &BertModel, c: &Case, mode: Pooling) -> Tensor {
    let pooled = match &c.packed {
        Some(p) => pool_packed(&model.forward_packed(p).unwrap(), &p.lens, mode).unwrap(),
        None => pool(&model.forward(&c.ids, &c.mask).unwrap(), &c.mask, mode).unwrap(),
    };
    let emb = l2_normalize(&pooled).unwrap();
    (emb * &c.probe).unwrap().sum_all().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn set_entry(var: &Var, flat: usize, value: f64) {
    let shape = var.shape().clone();
    let mut data = var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    data[flat] = value;
    var.set(&Tensor::from_vec(data, shape, var.device()).unwrap())
        .unwrap();
}

fn check(mode: Pooling, packed: bool) {
    let dev = Device::Cpu;
    let cfg = tiny_config();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
    let model = BertModel::load(vb, &cfg).unwrap();
    // Random values everywhere (layer-norm weights and biases too), so that no
    // parameter sits at a point where its gradient is trivially zero.
    let vars: Vec<(String, Var)> = {
        let data = varmap.data().lock().unwrap();
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    for (_, var) in &vars {
        let r = Tensor::randn(0f64, 0.5, var.shape(), &dev).unwrap();
        var.set(&r).unwrap();
    }
    let c = case(&dev, cfg.hidden_size, packed);
    let grads = loss(&model, &c, mode).backward().unwrap();
    if packed {
        // The packed path is the padded one without the padding: same loss, same
        // gradient in every parameter, to f64 rounding.
        let padded = Case {
            probe: c.probe.clone(),
            ..case(&dev, cfg.hidden_size, false)
        };
        let l_padded = loss(&model, &padded, mode);
        let d = (scalar(&loss(&model, &c, mode)) - scalar(&l_padded)).abs();
        assert!(d < 1e-12, "packed and padded losses differ by {d}");
        let g_padded = l_padded.backward().unwrap();
        for (name, var) in &vars {
            let a: Vec<f64> = grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let b: Vec<f64> = g_padded
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-10,
                "{name}: packed and padded gradients differ by {worst}"
            );
        }
    }

    let eps = 1e-6;
    let mut kinds_checked = std::collections::BTreeSet::new();
    for (name, var) in &vars {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name}: a non-differentiable op?"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let norm: f64 = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        // The key bias adds the same q·b to every score of a softmax row, which the
        // softmax ignores: its gradient is exactly zero (the finite differences below
        // still check that). Every other parameter influences the loss.
        if !name.ends_with("key.bias") {
            assert!(norm > 1e-8, "{name}: gradient is zero ({norm})");
        }
        // The largest entries plus a few fixed others, zero-gradient ones included.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        let mut picks: Vec<usize> = idx.iter().take(3).copied().collect();
        picks.extend([0, g.len() / 2, g.len() - 1]);
        let orig: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
        for &i in &picks {
            set_entry(var, i, orig[i] + eps);
            let plus = scalar(&loss(&model, &c, mode));
            set_entry(var, i, orig[i] - eps);
            let minus = scalar(&loss(&model, &c, mode));
            set_entry(var, i, orig[i]);
            let fd = (plus - minus) / (2.0 * eps);
            let err = (fd - g[i]).abs();
            assert!(
                err <= 1e-6 * (1.0 + g[i].abs()),
                "{name}[{i}] ({mode:?}): analytic {} vs finite difference {fd}",
                g[i]
            );
        }
        let kind = name
            .rsplit('.')
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(".");
        kinds_checked.insert(kind);
    }
    // 16 parameter tensors per layer + 5 embedding tensors: all kinds must be present.
    for kind in [
        "word_embeddings.weight",
        "position_embeddings.weight",
        "token_type_embeddings.weight",
        "LayerNorm.weight",
        "LayerNorm.bias",
        "query.weight",
        "key.bias",
        "value.weight",
        "dense.weight",
        "dense.bias",
    ] {
        assert!(
            kinds_checked.contains(kind),
            "parameter kind {kind} not checked"
        );
    }
    assert_eq!(vars.len(), 5 + 16 * cfg.num_hidden_layers);
}

#[test]
fn gradients_match_finite_differences_mean_pooling() {
    check(Pooling::Mean, false);
}

#[test]
fn gradients_match_finite_differences_cls_pooling() {
    check(Pooling::Cls, false);
}

#[test]
fn packed_gradients_match_padded_and_finite_differences_mean_pooling() {
    check(Pooling::Mean, true);
}

#[test]
fn packed_gradients_match_padded_and_finite_differences_cls_pooling() {
    check(Pooling::Cls, true);
}
