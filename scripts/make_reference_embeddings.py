#!/usr/bin/env python3
"""Reference embeddings for the Rust encoder, produced by sentence-transformers.

Writes crates/encoder/tests/fixtures/minilm_reference.json (texts, token ids after
truncation, versions) and minilm_reference.f32 (raw little-endian f32, n x 384,
row-major, L2-normalised sentence embeddings).

Deterministic, no network. Needs scripts/fetch-model.sh and scripts/setup-python.sh:

    scripts/fetch-model.sh && scripts/setup-python.sh
    OMP_NUM_THREADS=2 .venv/bin/python scripts/make_reference_embeddings.py
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path(os.environ.get("SIEVE_MODELS_DIR", REPO / "models")) / "all-MiniLM-L6-v2"
DEFAULT_DATA = Path("/work/shared/data/scifact")
DEFAULT_OUT = REPO / "crates" / "encoder" / "tests" / "fixtures"


def load_scifact(data: Path):
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    with open(data / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line) for line in f]
    return corpus, queries


def build_texts(data: Path) -> list[str]:
    corpus, queries = load_scifact(data)
    doc_text = lambda d: (d.get("title", "") + " " + d.get("text", "")).strip()  # noqa: E731

    texts: list[str] = []
    # --- very short / degenerate -------------------------------------------------
    texts += ["", "a", "A", "I", "x", "hello", "Hello", "HELLO", "world", "cat", "the",
              "0", "1", "42", "3.14159", "-17", "1e-9", "1,000,000", "2024-01-31",
              "12:30pm", "$5.00", "100%", "v2.0.1", "COVID-19", "IL-6", "p53", "mRNA",
              "TNF-α", "β-catenin", "CD4+", "[CLS]", "[SEP]", "[PAD]", "[MASK]",
              "[UNK]", "##ing", "unaffable", "antidisestablishmentarianism",
              "pneumonoultramicroscopicsilicovolcanoconiosis",
              "x" * 99, "x" * 100, "x" * 101, "ab" * 150]
    # --- punctuation only --------------------------------------------------------
    texts += ["!", "!!!", "...", "?", "—", "–", "-", "--", "…", "()", "[]{}", "\"'\"",
              "@#$%^&*", ".,;:!?", "«»", "¿¡", "、。", "~`|\\/<>"]
    # --- whitespace heavy --------------------------------------------------------
    texts += [" ", "   ", "\t", "\n", "\r\n", " \t\n ", "  leading spaces",
              "trailing spaces   ", "multiple     internal      spaces",
              "tabs\tbetween\twords", "new\nlines\nbetween\nwords",
              "\u00a0non-breaking\u00a0spaces\u00a0", "ideographic\u3000space",
              "em\u2003space and thin\u2009space", " \n\n\t mixed \r\n whitespace \t "]
    # --- mixed case --------------------------------------------------------------
    texts += ["The Quick Brown Fox", "tHe qUiCk BrOwN fOx", "THE QUICK BROWN FOX",
              "iPhone McDonald's O'Neill", "DNA RNA ATP NADPH", "CamelCaseIdentifierName"]
    # --- sentences ---------------------------------------------------------------
    texts += [
        "This is a sentence.",
        "The quick brown fox jumps over the lazy dog.",
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "A man is riding a horse.",
        "A woman is playing violin.",
        "Two men pushed carts through the woods.",
        "A man is riding a white horse on an enclosed ground.",
        "A monkey is playing drums.",
        "Someone in a gorilla costume is playing a set of drums.",
        "What is the capital of France?",
        "Paris is the capital and most populous city of France.",
        "How do vaccines train the immune system?",
        "Was Ronald Reagan a democrat?",
        "Aspirin reduces the risk of myocardial infarction in adults.",
        "Smoking does not cause lung cancer.",
        "I can't believe it's not butter!",
        "Don't stop; won't stop — can't stop.",
        "He said, \"It's 5 o'clock somewhere.\"",
        "e.g. i.e. etc. vs. Dr. Mr. Mrs. U.S.A.",
        "Temperature rose to 37.5°C (99.5°F) after 3 h.",
        "The p-value was < 0.05 (n = 1,234; 95% CI 1.1–2.3).",
        "Résumé of a naïve café owner in São Paulo.",
        "Straße, Æsir, Øresund, Ångström, Łódź, İstanbul.",
    ]
    # --- unicode ---------------------------------------------------------------
    texts += [
        "café", "cafe\u0301",  # precomposed vs combining acute
        "naïve résumé coöperate", "Ñandú über Zürich",
        "e\u0301\u0302\u0303 combining marks stacked a\u0308\u0304",
        "东京是日本的首都。", "我爱自然语言处理", "中文English混合text", "日本語のテキストです",
        "한국어 문장입니다", "Привет, мир! Как дела?", "Γειά σου Κόσμε", "שלום עולם",
        "مرحبا بالعالم", "السلام عليكم ورحمة الله", "नमस्ते दुनिया", "สวัสดีชาวโลก",
        "😀", "😀😃😄", "I love pizza 🍕🍕!", "family: 👨\u200d👩\u200d👧\u200d👦", "flags 🇫🇷🇯🇵",
        "thumbs 👍🏽 up", "♥ ★ ☺ ✓ ✗ → ← ∞ ≠ ≤ ≥ ± × ÷",
        "zero\u200bwidth\u200bspace", "zero\u200cwidth\u200dnon-joiner", "\ufeffBOM at start",
        "soft\u00adhyphen", "word\u2060joiner", "\u200b", "\u200b\u200c\u200d",
        "ＦＵＬＬ－ＷＩＤＴＨ　ｔｅｘｔ　１２３", "ｈｅｌｌｏ　ｗｏｒｌｄ", "ﬁnance ﬂower (ligatures)",
        "Ⅻ ① ² ½ ㎏ ℃", "𝐁𝐨𝐥𝐝 𝑴𝒂𝒕𝒉", "control\x07chars\x1b[0m\x00here", "tab\x0bvtab\x0cff",
        "replacement \ufffd char", "private use \ue000\uf8ff", "math: ∀x ∈ ℝ, ∃y: x² + y² = 1",
        "IPA: /ˈfɒnətɪk/", "Ελληνικά και English και 中文 και العربية", "Tiếng Việt có dấu",
    ]
    # --- URLs, code, numbers ---------------------------------------------------
    texts += [
        "https://www.example.com/path/to/page?query=1&lang=en#section",
        "Visit http://localhost:8080/api/v1/users/42 for details.",
        "mailto:someone@example.org", "user.name+tag@sub.domain.co.uk",
        "ftp://files.example.net/pub/README.txt",
        "def f(x):\n    return x ** 2 + 1  # square plus one",
        "fn main() { println!(\"Hello, {}!\", name); }",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "for (int i = 0; i < n; ++i) { sum += a[i]; }",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
        "<div class=\"x\">Hello &amp; welcome</div>",
        "$ git commit -m 'fix: handle edge-case' && cargo test --release",
        "x_1 = alpha*beta/gamma - delta^2",
        "3.14159265358979323846264338327950288419716939937510",
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
        "0x1F 0b1010 0o777 1_000_000 6.022e23 -0.0 NaN inf",
        "ISBN 978-3-16-148410-0, DOI 10.1000/xyz123, PMID 12345678",
        "+1 (555) 123-4567", "192.168.0.1:443", "2001:db8::ff00:42:8329",
    ]
    # --- repetition / long words -------------------------------------------------
    texts += ["word " * 10, "the " * 300, "a" * 500, "supercalifragilistic " * 60,
              "🙂" * 300, "日本" * 200, ". " * 400, "Hello, world! " * 100]

    # --- long texts from SciFact: > 256 word pieces, > 512 word pieces ---------------
    rng = random.Random(1234)
    docs = sorted(corpus, key=lambda d: d["_id"])
    picked = rng.sample(docs, 40)
    for i in range(0, 12, 2):  # ~2 abstracts: usually 300-700 tokens
        texts.append(doc_text(picked[i]) + " " + doc_text(picked[i + 1]))
    for i in range(12, 24, 4):  # ~4 abstracts: > 512 tokens
        texts.append(" ".join(doc_text(d) for d in picked[i:i + 4]))
    texts.append(" ".join(doc_text(d) for d in picked[24:40]))  # very long (~5k tokens)
    longest = max(docs, key=lambda d: len(doc_text(d)))
    texts.append(doc_text(longest))
    texts.append(doc_text(longest).upper())
    texts.append("  \n".join(doc_text(d) for d in picked[0:3]))

    # --- real SciFact queries and docs (~60) -----------------------------------------
    qs = sorted(queries, key=lambda q: q["_id"])
    for q in rng.sample(qs, 30):
        texts.append(q["text"])
    for d in rng.sample(docs, 30):
        texts.append(doc_text(d))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    import numpy as np
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    texts = build_texts(args.data)
    assert len(texts) >= 240, len(texts)

    model = SentenceTransformer(str(args.model), device="cpu")
    max_len = model.max_seq_length
    assert max_len == 256, max_len
    tok = model.tokenizer

    input_ids: list[list[int]] = []
    for t in texts:
        ids = tok(t, truncation=True, max_length=max_len)["input_ids"]
        # Cross-check against sentence-transformers' own preprocessing path
        # (which e.g. strips the text before tokenising).
        feats = model.tokenize([t])
        mask = feats["attention_mask"][0].bool()
        st_ids = feats["input_ids"][0][mask].tolist()
        if st_ids != ids:
            raise SystemExit(f"tokenizer mismatch for {t!r}: {ids} vs {st_ids}")
        input_ids.append(ids)

    emb = model.encode(texts, batch_size=32, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    emb = np.ascontiguousarray(emb, dtype="<f4")
    assert emb.shape == (len(texts), 384), emb.shape
    assert np.all(np.isfinite(emb))

    sha = hashlib.sha256((args.model / "model.safetensors").read_bytes()).hexdigest()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "minilm_reference.f32").write_bytes(emb.tobytes())
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_sha256": sha,
        "max_seq_length": max_len,
        "dim": int(emb.shape[1]),
        "normalize_embeddings": True,
        "pooling": "mean",
        "batch_size": 32,
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "embeddings_file": "minilm_reference.f32",
        "embeddings_layout": "little-endian f32, row-major, n_texts x dim",
        "n_texts": len(texts),
        "texts": texts,
        "token_counts": [len(x) for x in input_ids],
        "input_ids": input_ids,
    }
    with open(args.out / "minilm_reference.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    tc = meta["token_counts"]
    print(f"wrote {len(texts)} texts; token counts min {min(tc)} max {max(tc)}; "
          f"{sum(c == max_len for c in tc)} truncated; -> {args.out}")


if __name__ == "__main__":
    main()
