//! Embeddings equal sentence-transformers' for all-MiniLM-L6-v2.
//!
//! The fixture (`fixtures/minilm_reference.*`) was written once by
//! `scripts/make_reference_embeddings.py` with sentence-transformers on PyTorch: ~240
//! texts from one word to several times the 256-token limit, Unicode, punctuation-only
//! and real SciFact claims and abstracts. The model comes from `scripts/fetch-model.sh`.

use std::path::PathBuf;

use serde::Deserialize;
use sieve_encoder::{Encoder, LoadOptions};

#[derive(Deserialize)]
struct Reference {
    model_sha256: String,
    max_seq_length: usize,
    texts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    embeddings_file: String,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `SIEVE_TEST_MODEL`, else `models/all-MiniLM-L6-v2` at the workspace root.
fn model_dir() -> PathBuf {
    std::env::var_os("SIEVE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
        })
}

fn load() -> (Reference, Vec<f32>, Encoder) {
    let json = std::fs::read(fixtures().join("minilm_reference.json")).unwrap();
    let reference: Reference = serde_json::from_slice(&json).unwrap();
    let raw = std::fs::read(fixtures().join(&reference.embeddings_file)).unwrap();
    let vectors: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let dir = model_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "{} has no model: run scripts/fetch-model.sh first",
        dir.display()
    );
    let encoder = Encoder::load_dir(&dir, &LoadOptions::default()).unwrap();
    (reference, vectors, encoder)
}

#[test]
fn token_ids_and_embeddings_match_sentence_transformers() {
    let (reference, vectors, encoder) = load();
    assert!(reference.texts.len() >= 200);
    assert_eq!(encoder.max_seq_length(), reference.max_seq_length);
    assert!(
        encoder.fingerprint().len() == 64 && !reference.model_sha256.is_empty(),
        "fingerprint and fixture checksum present"
    );
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let ids = encoder.tokenize(&texts).unwrap();
    for (i, (ours, theirs)) in ids.iter().zip(&reference.input_ids).enumerate() {
        assert_eq!(
            ours, theirs,
            "token ids differ for text {i}: {:?}",
            texts[i]
        );
    }
    assert!(
        ids.iter().any(|t| t.len() == reference.max_seq_length),
        "fixture must include texts truncated at max_seq_length"
    );

    let dim = encoder.dim();
    let emb = encoder.encode(&texts, 32, &|_| {}).unwrap();
    let mut worst = (f32::INFINITY, 0);
    for i in 0..texts.len() {
        let ours = emb.row(i);
        let theirs = &vectors[i * dim..(i + 1) * dim];
        let dot: f32 = ours.iter().zip(theirs).map(|(a, b)| a * b).sum();
        let na: f32 = ours.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nb: f32 = theirs.iter().map(|a| a * a).sum::<f32>().sqrt();
        let cos = dot / (na * nb);
        if cos < worst.0 {
            worst = (cos, i);
        }
        assert!((na - 1.0).abs() < 1e-5, "text {i} not normalised: {na}");
    }
    println!("worst cosine {} on text {}", worst.0, worst.1);
    assert!(
        worst.0 >= 0.99999,
        "cosine {} < 0.99999 for text {}: {:?}",
        worst.0,
        worst.1,
        texts[worst.1]
    );
}

#[test]
fn batch_size_and_padding_do_not_change_embeddings() {
    let (reference, _, encoder) = load();
    let texts: Vec<&str> = reference
        .texts
        .iter()
        .take(40)
        .map(String::as_str)
        .collect();
    let one = encoder.encode(&texts, 1, &|_| {}).unwrap();
    let many = encoder.encode(&texts, 16, &|_| {}).unwrap();
    let max_diff = one
        .data
        .iter()
        .zip(&many.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-5,
        "padding changed an embedding by {max_diff}"
    );
}

#[test]
fn missing_files_and_unreachable_hub_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Encoder::load_dir(tmp.path(), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    let err = Encoder::load("./no/such/dir", &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no such directory"), "{err}");
}

/// A `config.json` naming fewer layers than the weights hold is refused, naming both
/// counts (a 4-layer config over 6-layer weights once loaded silently and scored
/// nDCG 0.378).
#[test]
fn a_config_with_fewer_layers_than_the_weights_is_refused() {
    let src = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "model.safetensors"] {
        std::os::unix::fs::symlink(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = 4.into();
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    let err = Encoder::load_dir(tmp.path(), &LoadOptions::default())
        .err()
        .expect("a 4-layer config over 6-layer weights loaded")
        .to_string();
    assert!(
        err.contains("num_hidden_layers is 4") && err.contains("holds 6 layers"),
        "{err}"
    );
    // The untouched directory still loads.
    Encoder::load_dir(&src, &LoadOptions::default()).unwrap();
}
