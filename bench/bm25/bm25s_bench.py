#!/usr/bin/env python3
"""bm25s throughput on a BEIR corpus (the Python half of bench/bm25/run.sh).

    .venv/bin/python bench/bm25/bm25s_bench.py CORPUS_JSONL[.gz] QUERIES_JSONL[.gz] \\
        [--k 100] [--repeats 3] [--threads N,0] [--query-repeat 1,10] [--sieve-run FILE]

bm25s is set up as MTEB's bm25s baseline: BM25(method="lucene", k1=1.5, b=0.75),
bm25s.tokenize(stopwords="en", stemmer=PyStemmer "english"), default (numpy) backend.

* Documents are (title + " " + text).strip() (text.strip() without a title), queries
  their text; the first of duplicate ids is kept, as sieve's readers do. File reading
  is not timed.
* build: tokenize the corpus + BM25.index (bm25s precomputes every (term, doc) score).
* retrieve: tokenize the queries (return_ids=False, as MTEB does) + retrieve top-k,
  timed together ("qps_median", the number comparable with sieve, whose retrieve
  takes raw text) and also the retrieve call alone ("retrieve_only_qps_median").
  --threads: bm25s n_threads values; 0 = sequential (bm25s's single-threaded mode),
  N > 0 = a ThreadPoolExecutor of N workers. Default: all cores, then 0.
  --selection: bm25s's backend_selection for the per-query top-k (default "auto": JAX's
  top_k when jax is importable, else numpy; the JSON says which ran). Where jax is
  installed (e.g. with a CUDA jaxlib) "auto" costs a JAX dispatch per query; pass numpy
  there to compare with a machine without jax.
  --query-repeat: the query set is repeated R times (comma-separated list: each R is
  timed separately) for longer, more stable timings.
* --sieve-run FILE: sieve's run (TSV query_id, doc_id, rank, score, written by
  `bench_bm25 --dump-run`): prints the average top-10 overlap with bm25s and the
  largest score difference on sieve's top-10 documents.

Prints one JSON line per measurement on stdout.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import sys
import time

WARMUP_QUERIES = 256


def read_jsonl(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_corpus(path: str) -> tuple[list[str], list[str]]:
    ids, texts, seen = [], [], set()
    for d in read_jsonl(path):
        did = str(d["_id"])
        if did in seen:
            continue
        seen.add(did)
        title, text = d.get("title") or "", d.get("text") or ""
        ids.append(did)
        texts.append((title + " " + text).strip() if title else text.strip())
    return ids, texts


def load_queries(path: str) -> tuple[list[str], list[str]]:
    ids, texts, seen = [], [], set()
    for d in read_jsonl(path):
        qid = str(d["_id"])
        if qid in seen:
            continue
        seen.add(qid)
        ids.append(qid)
        texts.append(d.get("text") or "")
    return ids, texts


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def counts(s: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in s.split(",")]
    except ValueError:
        sys.exit(f"{name}: expected comma-separated integers, got {s!r}")
    return values


def read_sieve_run(path: str) -> dict[str, list[tuple[str, float]]]:
    run: dict[str, list[tuple[str, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, did, rank, score = line.rstrip("\n").split("\t")
            run.setdefault(qid, []).append((int(rank), did, float(score)))
    return {q: [(d, s) for _, d, s in sorted(hits)] for q, hits in run.items()}


def compare(retriever, stemmer, doc_ids, query_ids, query_texts, sieve_path, cutoff=10):
    """Top-`cutoff` overlap between sieve's run and bm25s, plus score agreement."""
    import bm25s
    import numpy as np

    sieve = read_sieve_run(sieve_path)
    doc_pos = {d: i for i, d in enumerate(doc_ids)}
    tokens = bm25s.tokenize(query_texts, stopwords="en", stemmer=stemmer,
                            return_ids=False, show_progress=False)
    overlaps, tie_overlaps, max_diff, rel_diff = [], [], 0.0, 0.0
    for qid, toks in zip(query_ids, tokens):
        ids = retriever.get_tokens_ids(toks)
        scores = (retriever.get_scores_from_ids(ids) if ids
                  else np.zeros(len(doc_ids), dtype=np.float32))
        order = np.argsort(-scores, kind="stable")[:cutoff]
        ours = [int(i) for i in order if scores[i] > 0]
        theirs = [doc_pos[d] for d, _ in sieve.get(qid, [])[:cutoff]]
        denom = max(len(ours), len(theirs))
        if denom == 0:
            overlaps.append(1.0)
            tie_overlaps.append(1.0)
            continue
        common = len(set(ours) & set(theirs))
        overlaps.append(common / denom)
        # A sieve document outside bm25s's top-10 still "agrees" when bm25s gives it
        # the same score as its own 10th document (a tie broken the other way).
        last = scores[ours[-1]] if ours else 0.0
        tied = sum(1 for d in theirs if d not in ours and abs(scores[d] - last) <= 1e-4 * max(1.0, last))
        tie_overlaps.append(min(1.0, (common + tied) / denom))
        for d, s in sieve.get(qid, [])[:cutoff]:
            ref = float(scores[doc_pos[d]])
            max_diff = max(max_diff, abs(ref - s))
            rel_diff = max(rel_diff, abs(ref - s) / max(abs(ref), 1e-6))
    return {
        "tool": "compare",
        "queries": len(overlaps),
        "cutoff": cutoff,
        "top10_overlap_mean": round(statistics.fmean(overlaps), 5),
        "top10_overlap_min": round(min(overlaps), 5),
        "queries_below_1": sum(1 for o in overlaps if o < 1.0),
        "top10_overlap_ties_mean": round(statistics.fmean(tie_overlaps), 5),
        "score_max_abs_diff": float(f"{max_diff:.3g}"),
        "score_max_rel_diff": float(f"{rel_diff:.3g}"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("queries")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default=None, help="bm25s n_threads values (default: <cores>,0)")
    ap.add_argument("--query-repeat", default="1")
    ap.add_argument("--sieve-run", default=None)
    ap.add_argument("--selection", default="auto", choices=["auto", "numpy", "jax"])
    args = ap.parse_args()

    import bm25s
    import bm25s.selection
    import Stemmer

    selection = args.selection
    if selection == "auto":
        selection = "jax" if bm25s.selection.JAX_IS_AVAILABLE else "numpy"
    cores = os.cpu_count() or 1
    threads = counts(args.threads, "--threads") if args.threads else [cores, 0]
    query_repeats = counts(args.query_repeat, "--query-repeat")

    doc_ids, doc_texts = load_corpus(args.corpus)
    query_ids, query_texts = load_queries(args.queries)
    print(f"{len(doc_ids)} documents, {len(query_ids)} queries, k={args.k}, "
          f"{args.repeats} repeats, bm25s {bm25s.__version__}", file=sys.stderr)

    stemmer = Stemmer.Stemmer("english")
    t0 = time.perf_counter()
    corpus_tokens = bm25s.tokenize(doc_texts, stopwords="en", stemmer=stemmer, show_progress=False)
    t1 = time.perf_counter()
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(corpus_tokens, show_progress=False)
    t2 = time.perf_counter()
    del corpus_tokens
    build_s = t2 - t0
    print(json.dumps({
        "tool": "bm25s", "event": "build", "docs": len(doc_ids), "seconds": round(build_s, 4),
        "docs_per_s": round(len(doc_ids) / build_s, 1), "tokenize_seconds": round(t1 - t0, 4),
        "index_seconds": round(t2 - t1, 4), "cores": cores, "backend": retriever.backend,
        "selection": selection,
        "corpus": args.corpus,
    }), flush=True)

    k = min(args.k, len(doc_ids))

    def run(texts, n_threads):
        ta = time.perf_counter()
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False,
                                show_progress=False)
        tb = time.perf_counter()
        docs, scores = retriever.retrieve(tokens, k=k, n_threads=n_threads, show_progress=False,
                                          backend_selection=args.selection)
        tc = time.perf_counter()
        return tc - ta, tc - tb, docs, scores

    for repeat in query_repeats:
        texts = query_texts * repeat
        for n_threads in threads:
            run(texts[:WARMUP_QUERIES], n_threads)
            total, retrieve_only, hits = [], [], 0
            for _ in range(args.repeats):
                t_all, t_ret, _, scores = run(texts, n_threads)
                total.append(len(texts) / t_all)
                retrieve_only.append(len(texts) / t_ret)
                hits = int((scores > 0).sum())
            print(json.dumps({
                "tool": "bm25s", "event": "retrieve", "threads": max(n_threads, 1),
                "n_threads": n_threads, "queries": len(texts), "query_repeat": repeat, "k": k,
                "repeats": args.repeats, "qps_median": round(statistics.median(total), 1),
                "qps_runs": [round(q, 1) for q in total],
                "retrieve_only_qps_median": round(statistics.median(retrieve_only), 1),
                "hits": hits, "peak_rss_mib": round(peak_rss_mib(), 1),
            }), flush=True)

    if args.sieve_run:
        print(json.dumps(compare(retriever, stemmer, doc_ids, query_ids, query_texts,
                                 args.sieve_run)), flush=True)


if __name__ == "__main__":
    main()
