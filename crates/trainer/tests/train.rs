//! Training on a tiny random BERT (the real all-MiniLM-L6-v2 tokenizer, 2 layers of
//! width 32): GradCache equals the full batch in f64, a run interrupted and resumed
//! ends at the uninterrupted run's weights, and the exported directory loads back to
//! the same embeddings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sieve_encoder::{Encoder, LoadOptions};
use sieve_trainer::batch::{epoch_batches, Batch, MaskSources, SplitMix64};
use sieve_trainer::data::{DataOptions, TrainData};
use sieve_trainer::distributed::ThreadGroup;
use sieve_trainer::loss::contrastive_loss;
use sieve_trainer::loss::{FalseNegativePolicy, LossConfig};
use sieve_trainer::step::{batch_gradients, gradients_across, StepConfig};
use sieve_trainer::train::{Hooks, NoHooks, StepLog, TrainConfig, Trainer};

/// `SIEVE_TEST_MODEL`, else `models/all-MiniLM-L6-v2` at the workspace root (for its
/// tokenizer).
fn minilm() -> PathBuf {
    std::env::var_os("SIEVE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
        })
}

/// A random 2-layer BERT in the sentence-transformers layout.
fn tiny_model(dir: &Path) {
    let (vocab, hidden, inter, layers, positions) =
        (30522usize, 32usize, 64usize, 2usize, 128usize);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::copy(minilm().join("tokenizer.json"), dir.join("tokenizer.json"))
        .expect("run scripts/fetch-model.sh first");
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({
            "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": 4, "intermediate_size": inter, "hidden_act": "gelu",
            "max_position_embeddings": positions, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 48}"#,
    )
    .unwrap();
    let mut rng = SplitMix64(17);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut rand = |shape: &[usize], name: &str| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * 0.1)
            .collect();
        tensors.insert(
            name.into(),
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap(),
        );
    };
    rand(&[vocab, hidden], "embeddings.word_embeddings.weight");
    rand(
        &[positions, hidden],
        "embeddings.position_embeddings.weight",
    );
    rand(&[2, hidden], "embeddings.token_type_embeddings.weight");
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for m in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            rand(&[hidden, hidden], &format!("{p}.{m}.weight"));
            rand(&[hidden], &format!("{p}.{m}.bias"));
        }
        rand(&[inter, hidden], &format!("{p}.intermediate.dense.weight"));
        rand(&[inter], &format!("{p}.intermediate.dense.bias"));
        rand(&[hidden, inter], &format!("{p}.output.dense.weight"));
        rand(&[hidden], &format!("{p}.output.dense.bias"));
    }
    // A tensor the forward never uses: export must carry it over unchanged.
    rand(&[hidden, hidden], "pooler.dense.weight");
    let mut names = vec!["embeddings.LayerNorm".to_string()];
    for l in 0..layers {
        names.push(format!("encoder.layer.{l}.attention.output.LayerNorm"));
        names.push(format!("encoder.layer.{l}.output.LayerNorm"));
    }
    for n in names {
        tensors.insert(
            format!("{n}.weight"),
            Tensor::ones(hidden, DType::F32, &Device::Cpu).unwrap(),
        );
        tensors.insert(
            format!("{n}.bias"),
            Tensor::zeros(hidden, DType::F32, &Device::Cpu).unwrap(),
        );
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

/// 30 pairs over 10 topics, with repeated questions and negatives.
fn pairs_file(dir: &Path) -> PathBuf {
    let words = [
        "alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega", "theta", "zeta", "iota",
    ];
    let mut lines = String::new();
    for i in 0..30 {
        let t = words[i % 10];
        let q = if i % 7 == 0 {
            format!("what is {t}?")
        } else {
            format!("question {i} about {t} and {}", words[(i * 3) % 10])
        };
        let p = format!(
            "{t} is the answer number {i}, explained at some length with {} details",
            words[(i + 1) % 10]
        );
        let n = format!("an unrelated passage {i} on {}", words[(i + 5) % 10]);
        lines.push_str(&serde_json::json!({"query": q, "positive": p, "negative": n}).to_string());
        lines.push('\n');
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// The tiny model in f64 with trainable weights, and the first batch of 8 of the pair
/// fixture (masked false negatives): what the gradient-equality tests share.
struct F64Batch {
    _tmp: tempfile::TempDir,
    encoder: Encoder,
    params: Vec<candle_core::Var>,
    batch: Batch,
    tokens: Vec<Vec<u32>>,
}

impl F64Batch {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("tiny");
        tiny_model(&model);
        let data = TrainData::from_pairs(&pairs_file(tmp.path()), &DataOptions::default()).unwrap();
        let load = LoadOptions {
            dtype: DType::F64,
            ..Default::default()
        };
        let (encoder, varmap) = Encoder::load_trainable(&model, &load).unwrap();
        let params: Vec<_> = varmap.all_vars();
        let batches = epoch_batches(&data, 8, 3, 0);
        let batch = Batch::build(
            &data,
            &batches[0],
            FalseNegativePolicy::Mask,
            MaskSources::default(),
        );
        let refs: Vec<&str> = data.texts.iter().map(String::as_str).collect();
        let tokens = encoder.tokenize(&refs).unwrap();
        Self {
            _tmp: tmp,
            encoder,
            params,
            batch,
            tokens,
        }
    }
}

/// `a` and `b` hold a gradient for the same parameters, every one but BERT's unused
/// pooler, and they differ by less than `tol` anywhere.
fn same_gradients(
    params: &[candle_core::Var],
    a: &sieve_trainer::step::ParamGrads,
    b: &sieve_trainer::step::ParamGrads,
    tol: f64,
    what: &str,
) {
    let mut compared = 0;
    for p in params {
        match (a.get(p.as_tensor()), b.get(p.as_tensor())) {
            (Some(x), Some(y)) => {
                let diff = max_abs_diff(x, y);
                assert!(diff < tol, "{what}: a gradient differs by {diff}");
                compared += 1;
            }
            (None, None) => {}
            _ => panic!("{what}: a gradient on one side only"),
        }
    }
    assert_eq!(compared, params.len() - 1, "{what}");
}

/// A batch's query and document token lists.
fn token_lists<'a>(tokens: &'a [Vec<u32>], batch: &Batch) -> (Vec<&'a [u32]>, Vec<&'a [u32]>) {
    let list = |ids: &[u32]| ids.iter().map(|&t| tokens[t as usize].as_slice()).collect();
    (list(&batch.queries), list(&batch.documents))
}

#[test]
fn grad_cache_gradients_equal_full_batch_in_f64() {
    let F64Batch {
        _tmp,
        encoder,
        params,
        batch,
        tokens,
    } = F64Batch::new();
    let (q, d) = token_lists(&tokens, &batch);
    let loss = LossConfig {
        scale: 20.0,
        symmetric: true,
    };
    let full = batch_gradients(
        &encoder,
        &params,
        &q,
        &d,
        &batch.table,
        &StepConfig {
            loss,
            mini_batch_size: 1000,
            grad_cache: false,
        },
    )
    .unwrap();
    for mini in [1, 3, 7] {
        let cached = batch_gradients(
            &encoder,
            &params,
            &q,
            &d,
            &batch.table,
            &StepConfig {
                loss,
                mini_batch_size: mini,
                grad_cache: true,
            },
        )
        .unwrap();
        assert!(
            (full.loss - cached.loss).abs() < 1e-12,
            "loss {} vs {}",
            full.loss,
            cached.loss
        );
        same_gradients(
            &params,
            &full.grads,
            &cached.grads,
            1e-6,
            &format!("mini-batch {mini}"),
        );
    }
}

/// Data-parallel ranks (threads here, GPUs under NCCL) each embed a share of the batch
/// and back-propagate it; the summed gradients equal one process computing the whole
/// batch, in f64, with and without GradCache, also when the batch does not divide
/// evenly among the ranks.
#[test]
fn data_parallel_gradients_equal_one_process_in_f64() {
    let F64Batch {
        _tmp,
        encoder,
        params,
        batch,
        tokens,
    } = F64Batch::new();
    let (q, d) = token_lists(&tokens, &batch);
    assert!(d.len() > q.len(), "the batch has hard negatives");
    let loss = LossConfig {
        scale: 20.0,
        symmetric: true,
    };
    let one = batch_gradients(
        &encoder,
        &params,
        &q,
        &d,
        &batch.table,
        &StepConfig {
            loss,
            mini_batch_size: 1000,
            grad_cache: false,
        },
    )
    .unwrap();
    let loss_fn = |a: &Tensor, b: &Tensor| contrastive_loss(a, b, &batch.table, &loss);
    for (ranks, grad_cache) in [(2, false), (3, false), (3, true)] {
        let config = StepConfig {
            loss,
            mini_batch_size: if grad_cache { 2 } else { 1000 },
            grad_cache,
        };
        let outs = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(ranks)
                .into_iter()
                .map(|g| {
                    let (encoder, params, q, d, loss_fn) = (&encoder, &params, &q, &d, &loss_fn);
                    s.spawn(move || {
                        gradients_across(encoder, params, q, d, loss_fn, &config, &g).unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        for (rank, out) in outs.iter().enumerate() {
            let what = format!("{ranks} ranks, GradCache {grad_cache}, rank {rank}");
            assert!((one.loss - out.loss).abs() < 1e-12, "{what}: loss");
            assert!(max_abs_diff(&one.queries, &out.queries) < 1e-12, "{what}");
            assert!(
                max_abs_diff(&one.documents, &out.documents) < 1e-12,
                "{what}"
            );
            same_gradients(&params, &one.grads, &out.grads, 1e-10, &what);
        }
    }
}

/// A data-parallel run (2 ranks, threads standing in for GPUs) ends at the weights of
/// one process training on the same batches, directly and with GradCache; rank 0
/// alone writes the run's files.
#[test]
fn a_two_rank_run_ends_at_the_single_process_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    let load = LoadOptions::default();
    let data = || TrainData::from_pairs(&pairs, &DataOptions::default()).unwrap();
    for mini_batch_size in [None, Some(3)] {
        let config = TrainConfig {
            epochs: 1,
            mini_batch_size,
            ..resume_config()
        };
        let root = tmp.path().join(format!("mini-{mini_batch_size:?}"));
        let single = root.join("single");
        let mut t = Trainer::new(&model, &load, data(), config.clone(), &single).unwrap();
        let steps = t.run(&mut NoHooks).unwrap().steps;
        assert!(steps >= 3, "{steps} steps");
        let summaries = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(2)
                .into_iter()
                .enumerate()
                .map(|(rank, g)| {
                    let (model, load, config, root) = (&model, &load, &config, &root);
                    let data = data();
                    s.spawn(move || {
                        let out = root.join(format!("rank{rank}"));
                        let mut t = Trainer::new(model, load, data, config.clone(), &out).unwrap();
                        t.set_world(std::sync::Arc::new(g));
                        t.run(&mut NoHooks).unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        for s in &summaries {
            assert_eq!(s.steps, steps);
        }
        let a = weights(&single.join("model.safetensors"));
        let b = weights(&root.join("rank0/model.safetensors"));
        assert_eq!(a.len(), b.len());
        for (name, ta) in &a {
            let diff = max_abs_diff(ta, &b[name]);
            assert!(
                diff <= 1e-5,
                "{mini_batch_size:?} {name}: differs by {diff}"
            );
        }
        let losses = |dir: &Path| -> Vec<f64> {
            metrics(dir)
                .iter()
                .filter_map(|v| v["loss"].as_f64())
                .collect()
        };
        let (la, lb) = (losses(&single), losses(&root.join("rank0")));
        assert_eq!(la.len(), steps as usize);
        assert_eq!(la.len(), lb.len());
        for (x, y) in la.iter().zip(&lb) {
            assert!((x - y).abs() < 1e-5, "loss {x} vs {y}");
        }
        // Rank 1 computed the same steps and wrote nothing.
        let rank1 = root.join("rank1");
        let written: Vec<_> = std::fs::read_dir(&rank1)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(written.is_empty(), "rank 1 wrote {written:?}");
    }
    // Ranks on other data (or at other steps) refuse to start, all of them, rather than
    // sum the gradients of different batches.
    let fewer = tmp.path().join("fewer.jsonl");
    let text = std::fs::read_to_string(&pairs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&fewer, lines[..lines.len() - 1].join("\n")).unwrap();
    let errors = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .enumerate()
            .map(|(rank, g)| {
                let (model, load, root) = (&model, &load, tmp.path());
                let file = if rank == 0 {
                    pairs.clone()
                } else {
                    fewer.clone()
                };
                s.spawn(move || {
                    let data = TrainData::from_pairs(&file, &DataOptions::default()).unwrap();
                    let out = root.join(format!("mismatch{rank}"));
                    let mut t = Trainer::new(model, load, data, resume_config(), &out).unwrap();
                    t.set_world(std::sync::Arc::new(g));
                    t.run(&mut NoHooks).err().map(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for e in errors {
        let e = e.expect("a rank on other data started");
        assert!(e.contains("ranks disagree"), "{e}");
    }
}

/// Prompts reach training and travel with the model: the exported
/// config_sentence_transformers.json names them where sentence-transformers'
/// encode_query / encode_document look, the reloaded model applies them (its query
/// embedding is the plain embedding of the prompted text), and a resume with other
/// prompts is refused, naming them.
#[test]
fn prompts_train_export_and_guard_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    let data = || TrainData::from_pairs(&pairs, &DataOptions::default()).unwrap();
    let prompted = LoadOptions {
        query_prompt: Some("query: ".into()),
        document_prompt: Some("passage: ".into()),
        ..Default::default()
    };
    let config = TrainConfig {
        max_steps: Some(2),
        batch_size: 8,
        lr: 1e-3,
        save_every: 1,
        ..Default::default()
    };
    let out = tmp.path().join("out");
    let mut t = Trainer::new(&model, &prompted, data(), config.clone(), &out).unwrap();
    let with = t.run(&mut NoHooks).unwrap();
    let plain_out = tmp.path().join("plain");
    let mut p = Trainer::new(
        &model,
        &LoadOptions::default(),
        data(),
        config.clone(),
        &plain_out,
    )
    .unwrap();
    let without = p.run(&mut NoHooks).unwrap();
    assert_ne!(
        with.final_loss, without.final_loss,
        "the prompts changed nothing"
    );

    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("config_sentence_transformers.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(st["prompts"]["query"], "query: ");
    assert_eq!(st["prompts"]["document"], "passage: ");
    let loaded = Encoder::load_dir(&out, &LoadOptions::default()).unwrap();
    let q = loaded
        .encode_as(sieve_encoder::Role::Query, &["what is alpha?"], 8, &|_| {})
        .unwrap();
    let manual = loaded
        .encode(&["query: what is alpha?"], 8, &|_| {})
        .unwrap();
    assert_eq!(q.data, manual.data);
    let d = loaded
        .encode_as(
            sieve_encoder::Role::Document,
            &["what is alpha?"],
            8,
            &|_| {},
        )
        .unwrap();
    assert_ne!(q.data, d.data);
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains(r#"query "query: ", document "passage: ""#),
        "{card}"
    );

    // Resuming the prompted run without its prompts would train on other inputs.
    let mut again = Trainer::new(&model, &LoadOptions::default(), data(), config, &out).unwrap();
    let e = again.resume().unwrap_err().to_string();
    assert!(e.contains("prompts") && e.contains("passage: "), "{e}");
}

/// Matryoshka dimensions train (the in-batch loss over the prefixes, and the exact
/// softmax over each prefix's own table), and a prefix wider than the model is refused
/// before any step.
#[test]
fn matryoshka_trains_and_refuses_what_it_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    let data = || TrainData::from_pairs(&pairs, &DataOptions::default()).unwrap();
    let with = |dims: Vec<usize>, objective| TrainConfig {
        max_steps: Some(2),
        batch_size: 8,
        save_every: 0,
        objective,
        matryoshka: sieve_trainer::loss::Matryoshka {
            dims,
            weights: vec![],
        },
        ..Default::default()
    };
    use sieve_trainer::train::Objective;
    let run = |config: TrainConfig, name: &str| {
        Trainer::new(
            &model,
            &LoadOptions::default(),
            data(),
            config,
            &tmp.path().join(name),
        )
        .and_then(|mut t| t.run(&mut NoHooks))
    };
    let first = |dir: &str| metrics(&tmp.path().join(dir))[0]["loss"].as_f64().unwrap();
    for (objective, tag) in [
        (Objective::InBatch, "in-batch"),
        (Objective::Exact, "exact"),
    ] {
        let name = |what: &str| format!("{tag}-{what}");
        let plain = run(with(vec![], objective), &name("plain")).unwrap();
        run(with(vec![32], objective), &name("full")).unwrap();
        let nested = run(with(vec![32, 16, 8], objective), &name("nested")).unwrap();
        // The full width alone is the plain loss to the bit; three prefixes, the first
        // the full width, add two more terms, and the steps are the same.
        assert_eq!(first(&name("plain")), first(&name("full")), "{tag}");
        assert!(
            first(&name("nested")) > first(&name("plain")) + 1.0,
            "{tag}: {} vs {}",
            first(&name("nested")),
            first(&name("plain"))
        );
        assert_eq!(plain.steps, nested.steps, "{tag}");
        let e = run(with(vec![64], objective), &name("wide"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("64") && e.contains("32"), "{tag}: {e}");
    }
}

/// Matryoshka with the exact softmax resumes to the weights of an uninterrupted run: the
/// prefix tables (not checkpointed) are derived again from the checkpoint's full table,
/// equal to the ones the straight run kept up by write-backs, and refreshed with it.
#[test]
fn matryoshka_exact_run_resumes_to_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    let config = TrainConfig {
        objective: sieve_trainer::train::Objective::Exact,
        refresh_every: 4,
        matryoshka: sieve_trainer::loss::Matryoshka {
            dims: vec![32, 16, 8],
            weights: vec![1.0, 0.5, 0.25],
        },
        ..resume_config()
    };
    resume_equals_straight(&model, &pairs, tmp.path(), &config);
}

/// Distillation from the judge's scores: on a labeled Parquet (one query, its positive
/// and four scored candidates), training on the KL term alone moves the model's
/// softmax over the group towards the judge's: the KL falls to under half of where it
/// started. Inputs without scores and the exact objective are refused.
#[test]
fn distillation_moves_the_model_towards_the_judge() {
    use sieve_datasets::mined::{write_mined, Candidate, MinedRow};
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let texts = [
        ("d0", "the positive passage about alpha"),
        ("d1", "a strongly related passage on alpha and beta"),
        ("d2", "a somewhat related note on beta"),
        ("d3", "an unrelated text about gamma"),
        ("d4", "noise on delta and omega"),
    ];
    let mut corpus = String::new();
    for (id, t) in texts {
        corpus.push_str(&serde_json::json!({"_id": id, "title": "", "text": t}).to_string());
        corpus.push('\n');
    }
    std::fs::write(tmp.path().join("corpus.jsonl"), corpus).unwrap();
    let p = [0.95f32, 0.6, 0.1, 0.02];
    let cand = |i: usize| Candidate {
        doc_id: format!("d{}", i + 1),
        rank: i as u32 + 1,
        bm25: 1.0,
        dense: 0.5,
        source: "both".into(),
        bm25_rank: Some(i as u32 + 1),
        dense_rank: None,
        label: Some(
            if p[i] >= 0.5 {
                "relevant"
            } else {
                "irrelevant"
            }
            .into(),
        ),
        p_relevant: Some(p[i]),
    };
    let row = MinedRow {
        query_id: "q".into(),
        query: "what is alpha?".into(),
        positives: vec!["d0".into()],
        candidates: (0..4).map(cand).collect(),
        ..Default::default()
    };
    let labeled = tmp.path().join("labeled.parquet");
    let meta = [("sieve.corpus".to_string(), "corpus.jsonl".to_string())].into();
    write_mined(&labeled, &[row], &meta).unwrap();
    let data = || {
        TrainData::load(&labeled, &DataOptions::default())
            .unwrap()
            .0
    };
    let distill = sieve_trainer::distill::DistillConfig {
        weight: 1.0,
        temperature: 0.1,
        candidates: 8,
        only: true,
    };
    let config = TrainConfig {
        max_steps: Some(30),
        epochs: 30,
        batch_size: 1,
        lr: 1e-2,
        warmup_ratio: 0.0,
        save_every: 0,
        distill: Some(distill),
        ..Default::default()
    };
    let kl = |enc: &Encoder| {
        let all: Vec<&str> = std::iter::once("what is alpha?")
            .chain(texts.iter().map(|t| t.1))
            .collect();
        let e = enc.encode(&all, 8, &|_| {}).unwrap();
        let rows: Vec<Vec<f64>> = (0..all.len())
            .map(|i| e.row(i).iter().map(|&x| x as f64).collect())
            .collect();
        let group = sieve_trainer::loss::DistillGroup {
            query: 0,
            documents: vec![0, 1, 2, 3, 4],
            teacher: std::iter::once(1.0)
                .chain(p.iter().map(|&x| x as f64))
                .collect(),
        };
        sieve_trainer::loss::reference_distillation(&rows[..1], &rows[1..], &[group], 20.0, 0.1)
    };
    let base = Encoder::load_dir(&model, &LoadOptions::default()).unwrap();
    let before = kl(&base);
    let out = tmp.path().join("out");
    let mut t = Trainer::new(
        &model,
        &LoadOptions::default(),
        data(),
        config.clone(),
        &out,
    )
    .unwrap();
    t.run(&mut NoHooks).unwrap();
    let after = kl(&t.snapshot().unwrap());
    assert!(after < before / 2.0, "KL {before} → {after}");

    let e = Trainer::new(
        &model,
        &LoadOptions::default(),
        TrainData::from_pairs(&pairs_file(tmp.path()), &DataOptions::default()).unwrap(),
        config.clone(),
        &tmp.path().join("pairs-run"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("labeled Parquet"), "{e}");
    let exact = TrainConfig {
        objective: sieve_trainer::train::Objective::Exact,
        ..config
    };
    let e = Trainer::new(
        &model,
        &LoadOptions::default(),
        data(),
        exact,
        &tmp.path().join("x"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("in-batch"), "{e}");
}

/// Simulates a crash: panics once the run reaches `at`.
struct CrashAt(u64);
impl Hooks for CrashAt {
    fn on_step(&mut self, log: &StepLog) {
        if log.step == self.0 {
            panic!("simulated crash at step {}", log.step);
        }
    }
}

/// max |a − b| over two tensors of one shape, in f64.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The lines of a run's `metrics.jsonl`.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Settings of the crash-and-resume tests: 2 epochs of batches of 8, a checkpoint
/// every 3 steps.
fn resume_config() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 8,
        lr: 1e-3,
        save_every: 3,
        keep_checkpoints: 2,
        ..Default::default()
    }
}

/// Trains `config` straight through, and again with a crash after step 5 and a
/// resume from checkpoint 3; asserts both end at the same weights and log the same
/// losses, and returns the straight run's (step, loss) log.
fn resume_equals_straight(
    model: &Path,
    pairs: &Path,
    root: &Path,
    config: &TrainConfig,
) -> Vec<(u64, f64)> {
    let load = LoadOptions::default();
    let data = || TrainData::from_pairs(pairs, &DataOptions::default()).unwrap();

    let straight = root.join("straight");
    let mut t = Trainer::new(model, &load, data(), config.clone(), &straight).unwrap();
    let total = t.state().total_steps;
    assert!(total >= 8, "{total} steps");
    let summary = t.run(&mut NoHooks).unwrap();
    assert_eq!(summary.steps, total);

    let crashed = root.join("crashed");
    let mut t = Trainer::new(model, &load, data(), config.clone(), &crashed).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.run(&mut CrashAt(5))));
    assert!(r.is_err(), "the run should have crashed");
    drop(t);
    // Checkpoint 3 exists; steps 4–5 are lost, as after kill -9.
    let ckpts: Vec<u64> = Trainer::checkpoints(&crashed)
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(ckpts, vec![3]);
    let mut t = Trainer::new(model, &load, data(), config.clone(), &crashed).unwrap();
    assert!(t.resume().unwrap());
    assert_eq!(t.state().step, 3);
    let summary = t.run(&mut NoHooks).unwrap();
    assert_eq!(summary.steps, total);
    assert_eq!(summary.resumed_from, Some(3));

    let a = weights(&straight.join("model.safetensors"));
    let b = weights(&crashed.join("model.safetensors"));
    let base = weights(&model.join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    let mut moved = 0f32;
    for (name, ta) in &a {
        let tb = &b[name];
        let diff = max_abs_diff(ta, tb) as f32;
        assert!(diff <= 1e-6, "{name}: resumed run differs by {diff}");
        let d0 = max_abs_diff(ta, &base[name]) as f32;
        moved = moved.max(d0);
    }
    assert!(
        moved > 1e-4,
        "training did not change the weights ({moved})"
    );
    // The unused pooler is exported unchanged.
    let p = max_abs_diff(&a["pooler.dense.weight"], &base["pooler.dense.weight"]) as f32;
    assert_eq!(p, 0.0);

    // The metrics log holds each step once, and the same losses.
    let log = |dir: &Path| -> Vec<(u64, f64)> {
        metrics(dir)
            .iter()
            .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?)))
            .collect()
    };
    let (la, lb) = (log(&straight), log(&crashed));
    assert_eq!(
        la.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    assert_eq!(la.len(), lb.len());
    for ((sa, xa), (sb, xb)) in la.iter().zip(&lb) {
        assert_eq!(sa, sb);
        assert!((xa - xb).abs() < 1e-6, "step {sa}: loss {xa} vs {xb}");
    }
    assert!(straight.join("loss.svg").exists());
    la
}

#[test]
fn alternating_exact_run_resumes_across_a_side_switch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    // Sides switch before steps 3, 5 and 7 (1-based); the crash loses steps 4–5 and
    // the resume from checkpoint 3 must redo the switch at step 5, moment reset included.
    let config = TrainConfig {
        objective: sieve_trainer::train::Objective::Exact,
        refresh_every: 4,
        alternate_every: 2,
        ..resume_config()
    };
    let la = resume_equals_straight(&model, &pairs, tmp.path(), &config);
    let sides: Vec<String> = metrics(&tmp.path().join("straight"))
        .iter()
        .filter_map(|v| v["side"].as_str().map(str::to_string))
        .collect();
    assert_eq!(sides.len(), la.len());
    assert_eq!(
        &sides[..6],
        [
            "queries",
            "queries",
            "documents",
            "documents",
            "queries",
            "queries"
        ]
    );
}

#[test]
fn resumed_run_ends_at_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    let config = resume_config();
    let la = resume_equals_straight(&model, &pairs, tmp.path(), &config);
    assert!(
        la.last().unwrap().1 < la.first().unwrap().1,
        "loss went down: {la:?}"
    );
    let load = LoadOptions::default();
    let data = || TrainData::from_pairs(&pairs, &DataOptions::default()).unwrap();
    let crashed = tmp.path().join("crashed");

    // A different setting refuses to resume.
    let other = TrainConfig { lr: 5e-4, ..config };
    let mut t = Trainer::new(&model, &load, data(), other, &crashed).unwrap();
    let err = t.resume().unwrap_err().to_string();
    assert!(err.contains("other training settings"), "{err}");
}

#[test]
fn export_loads_back_to_the_same_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    let data = TrainData::from_pairs(&pairs, &DataOptions::default()).unwrap();
    let config = TrainConfig {
        max_steps: Some(2),
        batch_size: 8,
        lr: 1e-3,
        save_every: 0,
        ..Default::default()
    };
    let out = tmp.path().join("out");
    let mut t = Trainer::new(&model, &LoadOptions::default(), data, config, &out).unwrap();
    t.run(&mut NoHooks).unwrap();
    let texts = [
        "what is alpha?",
        "a longer text about gamma and delta and other things",
    ];
    let want = t.snapshot().unwrap().encode(&texts, 8, &|_| {}).unwrap();
    let loaded = Encoder::load_dir(&out, &LoadOptions::default()).unwrap();
    let got = loaded.encode(&texts, 8, &|_| {}).unwrap();
    for (a, b) in want.data.iter().zip(&got.data) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let pooling: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("1_Pooling/config.json")).unwrap()).unwrap();
    assert_eq!(pooling["pooling_mode"], "mean");
    assert_eq!(pooling["pooling_mode_mean_tokens"], true);
    let modules: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("modules.json")).unwrap()).unwrap();
    assert_eq!(modules[2]["type"], "sentence_transformers.models.Normalize");
    // The model card: YAML metadata first, then what the run was (huggingface_hub's
    // parse of it is bench/train/check_card.sh).
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.starts_with("---\ntags:\n- sentence-transformers\n"),
        "{card}"
    );
    for fact in [
        "- dataset_size:30\n",
        "- loss:MultipleNegativesRankingLoss\n",
        "**Base model:** `tiny`",
        "library_name: sentence-transformers\n",
        "**Size:** 30 training pairs",
        "| steps | 2 of 2 |",
        "| batch_size | 8 |",
        "`mask`",
    ] {
        assert!(card.contains(fact), "{fact:?} missing from\n{card}");
    }
    assert!(
        !card.contains("model-index"),
        "no evaluation, no model-index"
    );
    assert!(
        !card.contains("base_model:"),
        "a local directory is no Hub id"
    );
    // The base model's embeddings differ: training moved them.
    let base = Encoder::load_dir(&model, &LoadOptions::default())
        .unwrap()
        .encode(&texts, 8, &|_| {})
        .unwrap();
    assert!(base
        .data
        .iter()
        .zip(&got.data)
        .any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn grad_cache_equals_full_batch_for_the_exact_softmax_too() {
    use sieve_trainer::exact::{exact_loss, CorpusTable, ExactBatch};
    use sieve_trainer::step::gradients_with;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let data = TrainData::from_pairs(&pairs_file(tmp.path()), &DataOptions::default()).unwrap();
    let load = LoadOptions {
        dtype: DType::F64,
        ..Default::default()
    };
    let (encoder, varmap) = Encoder::load_trainable(&model, &load).unwrap();
    let params = varmap.all_vars();
    let refs: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    let tokens = encoder.tokenize(&refs).unwrap();
    // The corpus: every document text, embedded by the untrained model.
    let corpus: Vec<&str> = data.corpus.iter().map(|&t| data.text(t)).collect();
    let emb = encoder.encode(&corpus, 8, &|_| {}).unwrap();
    let table = CorpusTable::new(emb.data, emb.dim);
    let pos: HashMap<u32, usize> = data
        .corpus
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, i))
        .collect();
    let batch = Batch::build(
        &data,
        &epoch_batches(&data, 6, 1, 0)[0],
        FalseNegativePolicy::Mask,
        MaskSources::default(),
    );
    let eb = ExactBatch {
        fresh: batch.documents.iter().map(|t| pos[t]).collect(),
        positives: batch.documents[..batch.queries.len()]
            .iter()
            .map(|t| vec![pos[t]])
            .collect(),
        excluded: (0..batch.queries.len())
            .map(|i| vec![(i * 7 + 3) % table.len()])
            .collect(),
    };
    let q: Vec<&[u32]> = batch
        .queries
        .iter()
        .map(|&t| tokens[t as usize].as_slice())
        .collect();
    let d: Vec<&[u32]> = batch
        .documents
        .iter()
        .map(|&t| tokens[t as usize].as_slice())
        .collect();
    let loss = |qe: &Tensor, de: &Tensor| exact_loss(qe, de, &eb, &table, 20.0, 4);
    let step = |grad_cache, mini| StepConfig {
        loss: LossConfig::default(),
        mini_batch_size: mini,
        grad_cache,
    };
    let full = gradients_with(&encoder, &params, &q, &d, &loss, &step(false, 1000)).unwrap();
    let cached = gradients_with(&encoder, &params, &q, &d, &loss, &step(true, 2)).unwrap();
    assert!(
        (full.loss - cached.loss).abs() < 1e-12,
        "{} vs {}",
        full.loss,
        cached.loss
    );
    let mut compared = 0;
    for p in &params {
        if let (Some(a), Some(b)) = (
            full.grads.get(p.as_tensor()),
            cached.grads.get(p.as_tensor()),
        ) {
            let diff = max_abs_diff(a, b);
            assert!(diff < 1e-6, "gradient differs by {diff}");
            compared += 1;
        }
    }
    assert_eq!(compared, params.len() - 1);
    // Alternating sides: the query-side and the document-side gradients (the other
    // side's embeddings held constant) add up to the full gradient, each differs from
    // it, and GradCache gives them too.
    use sieve_trainer::step::Side;
    let sided = |side: Side, grad_cache| {
        let f = |qe: &Tensor, de: &Tensor| {
            let (qe, de) = side.apply(qe, de);
            exact_loss(&qe, &de, &eb, &table, 20.0, 4)
        };
        gradients_with(&encoder, &params, &q, &d, &f, &step(grad_cache, 2)).unwrap()
    };
    let by_queries = sided(Side::Queries, true);
    let by_documents = sided(Side::Documents, false);
    assert!((by_queries.loss - full.loss).abs() < 1e-12);
    let (mut compared, mut q_share, mut d_share) = (0, 0f64, 0f64);
    for p in &params {
        let Some(total) = full.grads.get(p.as_tensor()) else {
            continue;
        };
        let zero = total.zeros_like().unwrap();
        let gq = by_queries.grads.get(p.as_tensor()).unwrap_or(&zero);
        let gd = by_documents.grads.get(p.as_tensor()).unwrap_or(&zero);
        let sum = (gq + gd).unwrap();
        let diff = max_abs_diff(total, &sum);
        assert!(
            diff < 1e-6,
            "query + document gradients miss the full one by {diff}"
        );
        q_share = q_share.max(max_abs_diff(gq, &zero));
        d_share = d_share.max(max_abs_diff(gd, &zero));
        compared += 1;
    }
    assert_eq!(compared, params.len() - 1);
    assert!(q_share > 1e-6 && d_share > 1e-6, "{q_share} {d_share}");
}

/// Dense f64 reference of one query's dose: `logits` of every denominator term,
/// `flags` (1 known, 2 judged), `own` the positive's index.
fn reference_dose(logits: &[f64], flags: &[u8], own: usize) -> [f64; 4] {
    let z: f64 = logits.iter().map(|l| l.exp()).sum();
    let share = |f: &dyn Fn(usize) -> bool| {
        (0..logits.len())
            .filter(|&k| f(k))
            .map(|k| logits[k].exp())
            .sum::<f64>()
            / z
    };
    [
        share(&|k| flags[k] & 1 != 0),
        share(&|k| flags[k] & 2 != 0),
        share(&|k| flags[k] != 0),
        share(&|k| k == own),
    ]
}

fn unit(v: &[f32]) -> Vec<f64> {
    let n = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|&x| x as f64 / n).collect()
}

/// The dose logged at step 1 equals a dense recomputation from the base model's
/// embeddings, for the in-batch and the exact softmax, with masks on (the dose is
/// measured as if unmasked).
#[test]
fn logged_dose_equals_a_dense_reference() {
    use sieve_trainer::train::{plan, Objective};
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    for objective in [Objective::InBatch, Objective::Exact] {
        let config = TrainConfig {
            batch_size: 8,
            max_steps: Some(1),
            objective,
            loss: LossConfig {
                scale: 20.0,
                symmetric: false,
            },
            save_every: 0,
            ..Default::default()
        };
        let mut data = TrainData::from_pairs(&pairs, &DataOptions::default()).unwrap();
        let first = plan(&data, &config, None, 0)[0].clone();
        // Relations inside the first batch (and one to a document outside it, which
        // only the exact softmax sees): known, judged, and both.
        let pos = |k: usize, d: &TrainData| d.examples[first[k]].positive;
        let outside = data
            .examples
            .iter()
            .enumerate()
            .find(|(i, _)| !first.contains(i))
            .map(|(_, e)| e.positive)
            .unwrap();
        let (p1, p2, p3) = (pos(1, &data), pos(2, &data), pos(3, &data));
        let e0 = &mut data.examples[first[0]];
        e0.known = {
            let mut v = vec![p1, p2, outside];
            v.sort_unstable();
            v
        };
        e0.judged = vec![p2, p3];
        data.examples[first[4]].judged = vec![outside];
        let texts = data.texts.clone();
        let ex = data.examples.clone();
        let corpus = data.corpus.clone();
        let out = tmp.path().join(format!("{objective:?}"));
        let mut t = Trainer::new(&model, &LoadOptions::default(), data, config, &out).unwrap();
        t.run(&mut NoHooks).unwrap();
        let logged = &metrics(&out)[0]["dose"];

        // Reference: the base model's embeddings, every logit in f64.
        let enc = Encoder::load_dir(&model, &LoadOptions::default()).unwrap();
        let all: Vec<&str> = texts.iter().map(String::as_str).collect();
        let emb = enc.encode(&all, 16, &|_| {}).unwrap();
        let row = |t: u32| unit(&emb.data[t as usize * emb.dim..(t as usize + 1) * emb.dim]);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let mut per_query = Vec::new();
        for (k, &i) in first.iter().enumerate() {
            let e = &ex[i];
            // Denominator: the batch's documents (its positives; no hard negatives
            // are loaded by default... the pairs file has one each) or the corpus.
            let docs: Vec<u32> = match objective {
                Objective::InBatch => {
                    let mut d: Vec<u32> = first.iter().map(|&j| ex[j].positive).collect();
                    d.extend(first.iter().flat_map(|&j| ex[j].negatives.clone()));
                    d
                }
                Objective::Exact => corpus.clone(),
            };
            let (mut logits, mut flags, mut own) = (Vec::new(), Vec::new(), 0);
            for (j, &d) in docs.iter().enumerate() {
                let is_own = match objective {
                    Objective::InBatch => j == k,
                    Objective::Exact => d == e.positive,
                };
                if !is_own && (d == e.positive || d == e.query) {
                    continue; // identical texts are never in a denominator
                }
                if is_own {
                    own = logits.len();
                }
                logits.push(20.0 * dot(&row(e.query), &row(d)));
                flags.push((e.known.contains(&d) as u8) | ((e.judged.contains(&d) as u8) << 1));
            }
            per_query.push(reference_dose(&logits, &flags, own));
        }
        for (c, name) in ["known", "judged", "any", "positive"].iter().enumerate() {
            let mean = per_query.iter().map(|q| q[c]).sum::<f64>() / per_query.len() as f64;
            let max = per_query.iter().map(|q| q[c]).fold(0.0, f64::max);
            let got_mean = logged[name]["mean"].as_f64().unwrap();
            let got_max = logged[name]["max"].as_f64().unwrap();
            assert!(
                (got_mean - mean).abs() < 1e-5 && (got_max - max).abs() < 1e-5,
                "{objective:?} {name}: logged {got_mean}/{got_max}, reference {mean}/{max}"
            );
        }
        let any = per_query.iter().map(|q| q[2]).fold(0.0, f64::max);
        assert!(
            any > 0.01,
            "{objective:?}: the test case must carry a dose ({any})"
        );
    }
}

/// Clustered batching: a crashed run resumes to the uninterrupted weights (the same
/// batches), the clusters are stored, and batches differ from random ones.
#[test]
fn clustered_run_resumes_to_the_same_batches() {
    use sieve_trainer::batch::Batching;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let pairs = pairs_file(tmp.path());
    let config = TrainConfig {
        batching: Batching::Clustered,
        clusters: Some(4),
        ..resume_config()
    };
    resume_equals_straight(&model, &pairs, tmp.path(), &config);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("straight/clusters.json")).unwrap())
            .unwrap();
    assert_eq!(stored["assignment"].as_array().unwrap().len(), 30);
    assert!(stored["clusters"].as_u64().unwrap() <= 4);
    let data = TrainData::from_pairs(&pairs, &DataOptions::default()).unwrap();
    let t = Trainer::new(
        &model,
        &LoadOptions::default(),
        data,
        config,
        &tmp.path().join("x"),
    )
    .unwrap();
    let clustered = t.epoch_plan(0);
    let random = epoch_batches(t.data(), 8, resume_config().seed, 0);
    assert_ne!(clustered, random);
    let c = t.clusters().unwrap();
    let purity = sieve_trainer::train::cluster_purity(&clustered, c);
    let random_purity = sieve_trainer::train::cluster_purity(&random, c);
    assert!(
        purity > random_purity,
        "clustered batches {purity} vs random {random_purity}"
    );
}
