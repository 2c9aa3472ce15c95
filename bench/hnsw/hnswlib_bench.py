#!/usr/bin/env python3
"""hnswlib side of bench/hnsw: build time, recall@k vs exact, queries/s per ef.

Same inputs, parameters and JSON-lines output as the Rust example
``crates/index/examples/bench_hnsw.rs``, so run.sh can compare them directly.
Inner-product space on unit vectors (distance 1 - dot, as hnsw_rs's DistDot),
all cores for both building and searching.
"""
import argparse
import json
import os
import time

import hnswlib
import numpy as np


def exact_top_k(corpus, queries, k, block=8192):
    """Exact top-k ids by inner product, blocked over the corpus to bound memory."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(corpus), block):
        s = queries @ corpus[start : start + block].T
        s = np.concatenate([best_s, s], axis=1)
        ids = np.concatenate([best_i, np.arange(start, start + s.shape[1] - k)[None, :].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(s, top, 1)
        best_i = np.take_along_axis(ids, top, 1)
    return best_i


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--label", default="")
    a = ap.parse_args()

    corpus = np.load(a.corpus, mmap_mode="r")
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    queries = np.ascontiguousarray(np.load(a.queries), dtype=np.float32)
    n, dim = corpus.shape
    nq = len(queries)
    k = a.k

    t = time.perf_counter()
    exact = exact_top_k(corpus, queries, k)
    exact_s = time.perf_counter() - t
    print(json.dumps({"lib": "numpy-exact", "label": a.label, "n": n, "nq": nq, "dim": dim, "search_s": round(exact_s, 4)}), flush=True)

    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, ef_construction=a.ef_construction, M=a.m, random_seed=100)
    index.set_num_threads(a.threads)
    t = time.perf_counter()
    index.add_items(corpus, np.arange(n), num_threads=a.threads)
    build_s = time.perf_counter() - t
    print(json.dumps({"lib": "hnswlib", "label": a.label, "event": "build", "n": n, "dim": dim, "m": a.m,
                      "ef_construction": a.ef_construction, "threads": a.threads, "build_s": round(build_s, 3)}), flush=True)
    del corpus

    for ef in [int(x) for x in a.ef.split(",")]:
        index.set_ef(ef)
        labels, _ = index.knn_query(queries, k=k, num_threads=a.threads)
        found = sum(len(set(labels[i]).intersection(exact[i])) for i in range(nq))
        recall = found / (nq * k)
        passes = 0
        t = time.perf_counter()
        while passes < 3 or time.perf_counter() - t < a.min_seconds:
            index.knn_query(queries, k=k, num_threads=a.threads)
            passes += 1
        secs = time.perf_counter() - t
        print(json.dumps({"lib": "hnswlib", "label": a.label, "event": "search", "ef_search": ef, "k": k,
                          "recall": round(recall, 5), "qps": round(passes * nq / secs, 1), "passes": passes}), flush=True)


if __name__ == "__main__":
    main()
