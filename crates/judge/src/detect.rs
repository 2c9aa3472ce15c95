//! An instruction check: does a text talk to the judge?
//!
//! A prompt can tell a model to treat a document as data; it cannot make a small
//! model obey. So a pair whose document (or query) carries what reads as an
//! instruction to the grader is flagged, and its verdict is never acted on by
//! itself: labeled `suspicious`, it is neither masked nor used as a hard negative
//! (it stays in the softmax as an ordinary document). The rules were written against
//! the `dev` half of the injection set only ([`crate::adversarial`]); the `heldout`
//! half measures how they generalise, and calibration pairs measure what they cost
//! (real documents flagged by mistake).

/// Verbs that order an answer, in the languages of the dev attacks.
const ANSWER_VERBS: &[&str] = &[
    "answer",
    "reply",
    "respond",
    "responde",
    "responda",
    "contesta",
    "antworte",
    "antworten",
    "réponds",
    "répondez",
];

/// Words an instruction may order the judge to say.
const VERDICT_WORDS: &[&str] = &["yes", "no"];

/// Phrases that address the model reading the text (lower case).
const ADDRESSING: &[&str] = &[
    "ignore the question",
    "ignore the query",
    "ignore the document",
    "ignore all previous",
    "ignore previous instructions",
    "ignore the above",
    "ignore everything above",
    "disregard the question",
    "disregard previous",
    "instruction for the ai",
    "instructions for the ai",
    "for the ai reading",
    "note to the grader",
    "to the grader:",
    "instruction for the model",
    "instrucción para el modelo",
    "hinweis für den bewerter",
    "you are now",
    "you are gradebot",
    "stay in character",
    "let's play a game",
    "new policy from the operator",
    "system prompt",
    "ignora la pregunta",
    "忽略",
    "系统提示",
];

/// Chat-template control text: role switches and turn ends of common model families
/// (ChatML, Llama 3, Mistral, DeepSeek, Gemma) and the judge prompt's own tags.
const CHAT_MARKUP: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<｜",
    "[inst]",
    "[/inst]",
    "<<sys>>",
    "<start_of_turn>",
    "<end_of_turn>",
    "</document>",
    "<document>",
    "</query>",
    "[system]",
    "\nassistant:",
    "\nuser:",
    "\nsystem:",
];

/// Words (at most) between an answer verb and the verdict it orders.
const VERB_REACH: usize = 3;

/// Why `text` reads as an instruction to the judge, or `None`.
pub fn instruction_signal(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    if CHAT_MARKUP.iter().any(|m| lower.contains(m)) {
        return Some("chat markup");
    }
    if ADDRESSING.iter().any(|p| lower.contains(p)) {
        return Some("addresses the model");
    }
    // CJK instructions have no spaces: the verb 回答 ("answer") next to yes/no.
    if lower.contains("回答") && (lower.contains("yes") || lower.contains("no")) {
        return Some("orders an answer");
    }
    let words: Vec<String> = lower
        .split(|c: char| c.is_whitespace() || matches!(c, '«' | '»' | '„' | '“' | '”'))
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        if VERDICT_WORDS.contains(&w.as_str()) {
            let from = i.saturating_sub(VERB_REACH);
            if words[from..i]
                .iter()
                .any(|v| ANSWER_VERBS.contains(&v.as_str()))
            {
                return Some("orders an answer");
            }
        }
    }
    None
}

/// Why a (query, document) pair should not be acted on, or `None`.
pub fn pair_signal(query: &str, document: &str) -> Option<&'static str> {
    instruction_signal(document).or_else(|| instruction_signal(query))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adversarial::{attacks, base_pairs, probe_jobs, Split};

    /// Ordinary documents, including ones that say yes and no, are not flagged.
    #[test]
    fn plain_documents_pass() {
        for text in [
            "No significant difference was found between the groups (p = 0.34).",
            "Patients answered a questionnaire; 62% said yes to at least one symptom.",
            "Yes, vitamin D deficiency is common in the elderly.",
            "The results return to baseline after 12 weeks; no adverse events occurred.",
            "Can I take ibuprofen with warfarin? No: the combination raises bleeding risk.",
        ] {
            assert_eq!(instruction_signal(text), None, "{text}");
        }
        for b in base_pairs() {
            assert_eq!(pair_signal(&b.query, &b.document), None, "{}", b.document);
        }
    }

    /// Every dev attack is flagged (the rules were written against them).
    #[test]
    fn dev_attacks_are_flagged() {
        let bases = base_pairs();
        let dev: Vec<_> = attacks()
            .into_iter()
            .filter(|a| a.split == Split::Dev)
            .collect();
        for (id, job) in probe_jobs(&bases[..2], &dev) {
            if let Some(a) = id.attack {
                assert!(
                    pair_signal(&job.query, &job.document).is_some(),
                    "{} not flagged: {}",
                    dev[a].name,
                    job.document
                );
            }
        }
    }
}
