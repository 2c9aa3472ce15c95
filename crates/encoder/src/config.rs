//! Config structs that mirror the files of a Hugging Face / sentence-transformers model
//! directory. Every field has a `#[serde(default)]` so that configs written by older or
//! newer tools still load; only what the forward pass needs is read.

use serde::{Deserialize, Serialize};

/// `config.json` of a BERT-family model (BERT, MiniLM, BGE, E5, GTE-base …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub model_type: Option<String>,
    /// Only `absolute` is supported; read so that other kinds fail loudly instead of
    /// silently producing wrong embeddings.
    pub position_embedding_type: String,
}

impl Default for BertConfig {
    fn default() -> Self {
        // bert-base-uncased, the values transformers assumes for missing keys.
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            model_type: None,
            position_embedding_type: "absolute".into(),
        }
    }
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// `1_Pooling/config.json`. Both the legacy booleans and the newer `pooling_mode` string
/// are read and written: sentence-transformers reads the booleans, text-embeddings-inference
/// the string.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct PoolingConfig {
    pub word_embedding_dimension: Option<usize>,
    pub pooling_mode_cls_token: bool,
    pub pooling_mode_mean_tokens: bool,
    pub pooling_mode_max_tokens: bool,
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    pub pooling_mode_weightedmean_tokens: bool,
    pub pooling_mode_lasttoken: bool,
    pub include_prompt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooling_mode: Option<String>,
}

/// `sentence_bert_config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct SentenceBertConfig {
    pub max_seq_length: Option<usize>,
    pub do_lower_case: bool,
}

/// One entry of `modules.json`; used to find the pooling folder and whether a
/// `Normalize` module is present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct ModuleEntry {
    pub idx: usize,
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// How token embeddings become one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

impl PoolingConfig {
    /// Resolves the pooling mode; modes sieve does not implement are an error rather
    /// than a silent fallback to mean pooling.
    pub fn mode(&self) -> Result<Pooling, String> {
        if let Some(mode) = &self.pooling_mode {
            return match mode.as_str() {
                "mean" => Ok(Pooling::Mean),
                "cls" => Ok(Pooling::Cls),
                other => Err(format!(
                    "pooling_mode {other:?} is not supported (mean, cls)"
                )),
            };
        }
        match (self.pooling_mode_mean_tokens, self.pooling_mode_cls_token) {
            (true, false) => Ok(Pooling::Mean),
            (false, true) => Ok(Pooling::Cls),
            _ if self.pooling_mode_max_tokens
                || self.pooling_mode_mean_sqrt_len_tokens
                || self.pooling_mode_weightedmean_tokens
                || self.pooling_mode_lasttoken =>
            {
                Err("only mean or CLS pooling is supported".into())
            }
            (true, true) => Err("both mean and CLS pooling are set; pick one".into()),
            (false, false) => Ok(Pooling::Mean),
        }
    }

    /// The file sieve writes on export: both spellings of the mode.
    pub fn for_mode(mode: Pooling, dim: usize) -> Self {
        Self {
            word_embedding_dimension: Some(dim),
            pooling_mode_cls_token: mode == Pooling::Cls,
            pooling_mode_mean_tokens: mode == Pooling::Mean,
            include_prompt: Some(true),
            pooling_mode: Some(
                match mode {
                    Pooling::Mean => "mean",
                    Pooling::Cls => "cls",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes_resolve_from_either_spelling() {
        let legacy: PoolingConfig =
            serde_json::from_str(r#"{"pooling_mode_cls_token": true}"#).unwrap();
        assert_eq!(legacy.mode(), Ok(Pooling::Cls));
        let tei: PoolingConfig = serde_json::from_str(r#"{"pooling_mode": "mean"}"#).unwrap();
        assert_eq!(tei.mode(), Ok(Pooling::Mean));
        let max: PoolingConfig =
            serde_json::from_str(r#"{"pooling_mode_max_tokens": true}"#).unwrap();
        assert!(max.mode().is_err());
        let round = PoolingConfig::for_mode(Pooling::Cls, 384);
        let json = serde_json::to_value(&round).unwrap();
        assert_eq!(json["pooling_mode"], "cls");
        assert_eq!(json["pooling_mode_cls_token"], true);
        assert_eq!(json["pooling_mode_mean_tokens"], false);
    }

    #[test]
    fn bert_config_defaults_fill_missing_keys() {
        let c: BertConfig =
            serde_json::from_str(r#"{"hidden_size": 384, "num_attention_heads": 12}"#).unwrap();
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.layer_norm_eps, 1e-12);
    }
}
