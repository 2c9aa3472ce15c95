#!/usr/bin/env python3
"""sentence-transformers CPU encode throughput (the Python half of bench/encode).

Run with a fixed thread budget so numbers compare with the Rust encoder:

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/encode/st_encode.py \\
        --model models/all-MiniLM-L6-v2 --corpus /work/shared/data/scifact/corpus.jsonl.gz \\
        --limit 1000 --batch-size 32 --max-seq-length 256

Texts are the first N corpus rows, (title + " " + text).strip(), as MTEB builds them.
Only the encode call is timed (after a small warm-up). Prints one JSON line:
{"tool":"sentence-transformers","texts":N,"seconds":..,"texts_per_s":..,"peak_rss_mb":..}
peak_rss_mb is the process's max RSS (resource.getrusage), including model load.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import time


def load_texts(path: str, limit: int) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if len(texts) >= limit:
                break
            d = json.loads(line)
            texts.append((d.get("title", "") + " " + d.get("text", "")).strip())
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=256)
    args = ap.parse_args()

    if "OMP_NUM_THREADS" not in os.environ:
        print("warning: OMP_NUM_THREADS not set (use OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE)",
              file=sys.stderr)
    import torch
    from sentence_transformers import SentenceTransformer

    texts = load_texts(args.corpus, args.limit)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_seq_length
    model.encode(texts[:args.batch_size], batch_size=args.batch_size,
                 normalize_embeddings=True, show_progress_bar=False)  # warm-up

    t0 = time.perf_counter()
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    seconds = time.perf_counter() - t0
    assert emb.shape[0] == len(texts)

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "tool": "sentence-transformers",
        "texts": len(texts),
        "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
