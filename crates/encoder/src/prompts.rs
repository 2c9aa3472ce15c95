//! Instruction prompts: text prepended to queries and documents before tokenisation,
//! as e5 (`query: ` / `passage: `), bge and gte models are used, with the same rules as
//! sentence-transformers.
//!
//! A model directory names its prompts in `config_sentence_transformers.json`
//! (`"prompts": {"query": "query: ", "document": "passage: "}` and an optional
//! `"default_prompt_name"`). sentence-transformers' `encode_query` takes the prompt
//! named `query`, `encode_document` the first of `document`, `passage` and `corpus`, and
//! either falls back to the default prompt; `encode` applies the default prompt alone.
//! sieve resolves [`Role::Query`], [`Role::Document`] and [`Role::Plain`] the same way,
//! with `--query-prompt` / `--document-prompt` taking precedence, and writes the prompts
//! it used back into an exported model so that sentence-transformers applies them too.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which side of retrieval a text is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A search query (`encode_query`).
    Query,
    /// A corpus document (`encode_document`).
    Document,
    /// Neither: the model's default prompt only (`encode`).
    Plain,
}

/// The names sentence-transformers' `encode_document` looks for, in order.
const DOCUMENT_NAMES: [&str; 3] = ["document", "passage", "corpus"];

/// A model's prompts and the overrides given for this run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompts {
    /// `prompts` of `config_sentence_transformers.json`.
    pub named: BTreeMap<String, String>,
    /// `default_prompt_name`.
    pub default_name: Option<String>,
    /// `--query-prompt`: replaces the model's query prompt.
    pub query: Option<String>,
    /// `--document-prompt`: replaces the model's document prompt.
    pub document: Option<String>,
}

/// The prompt fields of `config_sentence_transformers.json` (its other fields are kept
/// as they are when sieve rewrites the file).
#[derive(Debug, Default, Deserialize)]
struct StConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

impl Prompts {
    /// Reads the model's prompts from `dir/config_sentence_transformers.json` (none
    /// when the file is missing), with `query` and `document` overriding them.
    pub fn load(dir: &Path, query: Option<String>, document: Option<String>) -> Result<Self> {
        let path = dir.join("config_sentence_transformers.json");
        let st: StConfig = if path.exists() {
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?
        } else {
            StConfig::default()
        };
        if let Some(name) = &st.default_prompt_name {
            if !st.prompts.contains_key(name) {
                return Err(Error::Config {
                    path,
                    message: format!("default_prompt_name {name:?} is not one of its prompts"),
                });
            }
        }
        Ok(Self {
            named: st.prompts,
            default_name: st.default_prompt_name,
            query,
            document,
        })
    }

    fn default_prompt(&self) -> Option<&str> {
        self.default_name
            .as_ref()
            .and_then(|n| self.named.get(n))
            .map(String::as_str)
    }

    /// The text prepended for `role` ("" for none).
    pub fn prompt(&self, role: Role) -> &str {
        let chosen = match role {
            Role::Query => self
                .query
                .as_deref()
                .or_else(|| self.named.get("query").map(String::as_str)),
            Role::Document => self.document.as_deref().or_else(|| {
                DOCUMENT_NAMES
                    .iter()
                    .find_map(|n| self.named.get(*n).map(String::as_str))
            }),
            Role::Plain => None,
        };
        chosen.or_else(|| self.default_prompt()).unwrap_or("")
    }

    /// Whether any role gets a prompt.
    pub fn any(&self) -> bool {
        [Role::Query, Role::Document, Role::Plain]
            .iter()
            .any(|&r| !self.prompt(r).is_empty())
    }

    /// `texts` with `role`'s prompt in front (sentence-transformers concatenates them
    /// as they are, without a separator).
    pub fn apply(&self, role: Role, texts: &[&str]) -> Vec<String> {
        let p = self.prompt(role);
        texts.iter().map(|t| format!("{p}{t}")).collect()
    }

    /// The `prompts` and `default_prompt_name` an exported model declares: the model's
    /// own, with the query and document prompts this run used under `query` and
    /// `document` (the names sentence-transformers' `encode_query` and
    /// `encode_document` look up first). When that overwrites the default prompt's own
    /// entry (a bge-style model whose default is its `query` prompt, run with
    /// `--query-prompt`), the default keeps its text under a name of its own, so that
    /// every role still resolves as in this run.
    pub fn exported(&self) -> (BTreeMap<String, String>, Option<String>) {
        let mut out = self.named.clone();
        let mut writes = Vec::new();
        for (role, name) in [(Role::Query, "query"), (Role::Document, "document")] {
            let p = self.prompt(role);
            let given = match role {
                Role::Query => self.query.is_some(),
                _ => self.document.is_some(),
            };
            // A prompt that only came from the default needs no name of its own.
            if given || (!p.is_empty() && Some(p) != self.default_prompt()) {
                writes.push((name, p.to_string()));
            }
        }
        let mut default_name = self.default_name.clone();
        if let (Some(dn), Some(dp)) = (&self.default_name, self.default_prompt()) {
            if writes.iter().any(|(n, p)| n == dn && p != dp) {
                let mut fresh = "default".to_string();
                while out.contains_key(&fresh) || writes.iter().any(|(n, _)| *n == fresh) {
                    fresh.insert_str(0, "sieve_");
                }
                out.insert(fresh.clone(), dp.to_string());
                default_name = Some(fresh);
            }
        }
        for (name, p) in writes {
            out.insert(name.to_string(), p);
        }
        (out, default_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(pairs: &[(&str, &str)], default: Option<&str>) -> Prompts {
        Prompts {
            named: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            default_name: default.map(str::to_string),
            ..Default::default()
        }
    }

    /// The lookups sentence-transformers' encode_query / encode_document / encode make.
    #[test]
    fn roles_resolve_as_sentence_transformers_does() {
        let e5 = named(&[("query", "query: "), ("passage", "passage: ")], None);
        assert_eq!(e5.prompt(Role::Query), "query: ");
        assert_eq!(e5.prompt(Role::Document), "passage: ");
        assert_eq!(e5.prompt(Role::Plain), "");
        let both = named(&[("corpus", "c: "), ("document", "d: ")], None);
        assert_eq!(both.prompt(Role::Document), "d: ");
        let bge = named(
            &[(
                "query",
                "Represent this sentence for searching relevant passages: ",
            )],
            Some("query"),
        );
        // The default prompt applies to every role without one of its own.
        assert!(bge.prompt(Role::Document).starts_with("Represent"));
        assert!(bge.prompt(Role::Plain).starts_with("Represent"));
        let mut given = e5.clone();
        given.query = Some("q> ".into());
        assert_eq!(given.prompt(Role::Query), "q> ");
        assert_eq!(given.prompt(Role::Document), "passage: ");
        assert_eq!(given.apply(Role::Query, &["a", "b"]), vec!["q> a", "q> b"]);
        assert!(!Prompts::default().any());
        assert!(e5.any());
    }

    /// An export names the prompts used where encode_query / encode_document find
    /// them, and keeps the model's others.
    #[test]
    fn exported_prompts_reproduce_the_run() {
        let mut p = named(&[("passage", "passage: "), ("sts", "sts: ")], None);
        p.query = Some("query: ".into());
        let (out, default) = p.exported();
        assert_eq!(out["query"], "query: ");
        assert_eq!(out["document"], "passage: ");
        assert_eq!(out["sts"], "sts: ");
        assert_eq!(default, None);
        let reread = Prompts {
            named: out,
            ..Default::default()
        };
        for role in [Role::Query, Role::Document, Role::Plain] {
            assert_eq!(reread.prompt(role), p.prompt(role), "{role:?}");
        }
        assert!(Prompts::default().exported().0.is_empty());
        // A bge-style model (its query prompt is the default) run with another query
        // prompt: documents and plain texts keep the old default.
        let mut bge = named(&[("query", "Represent: ")], Some("query"));
        bge.query = Some("q: ".into());
        let (named_out, default_name) = bge.exported();
        let reread = Prompts {
            named: named_out,
            default_name,
            ..Default::default()
        };
        for role in [Role::Query, Role::Document, Role::Plain] {
            assert_eq!(reread.prompt(role), bge.prompt(role), "{role:?}");
        }
        assert_eq!(reread.prompt(Role::Document), "Represent: ");
    }

    #[test]
    fn a_default_name_without_its_prompt_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config_sentence_transformers.json"),
            r#"{"prompts": {"query": "q: "}, "default_prompt_name": "passage"}"#,
        )
        .unwrap();
        let e = Prompts::load(dir.path(), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("passage") && e.contains("config_sentence_transformers.json"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("config_sentence_transformers.json"),
            r#"{"prompts": {"query": "q: "}, "default_prompt_name": null, "similarity_fn_name": "cosine"}"#,
        )
        .unwrap();
        let p = Prompts::load(dir.path(), None, Some("d: ".into())).unwrap();
        assert_eq!(
            (p.prompt(Role::Query), p.prompt(Role::Document)),
            ("q: ", "d: ")
        );
    }
}
