#!/usr/bin/env python3
"""Exact top-k by inner product with the peers a user would pick instead of sieve:
faiss IndexFlatIP (faiss-cpu) and numpy (a blocked matmul + argpartition, the way
sentence-transformers' `semantic_search` and most scripts do it). One implementation
per process, so each peak RSS is its own.

usage: peers.py {faiss,numpy} CORPUS.npy QUERIES.npy K REPEATS IDS_OUT
Prints one JSON line (seconds = median of REPEATS) and writes the ids as int64.
"""
import json
import resource
import sys
import time

import numpy as np


def search_numpy(c, q, k, block=None):
    # Queries per block: a score block of at most 2^27 floats (512 MiB; with
    # argpartition's negated copy and int64 indices ~2 GiB), 1,024 queries at most.
    # 1,024 queries against 1M rows took 23.7 GiB peak here, at the machine's limit.
    block = block or max(16, min(1024, 2**27 // max(1, c.shape[0])))
    out = np.empty((q.shape[0], k), dtype=np.int64)
    for s in range(0, q.shape[0], block):
        scores = q[s : s + block] @ c.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        out[s : s + block] = np.take_along_axis(part, order, axis=1)
    return out


def main():
    impl, corpus, queries, k, repeats, ids_out = sys.argv[1:]
    k, repeats = int(k), int(repeats)
    c = np.load(corpus, mmap_mode="r")
    c = np.ascontiguousarray(c, dtype=np.float32)
    q = np.ascontiguousarray(np.load(queries), dtype=np.float32)
    if impl == "faiss":
        import faiss

        index = faiss.IndexFlatIP(c.shape[1])
        index.add(c)

        def run():
            return index.search(q, k)[1]

        threads = faiss.omp_get_max_threads()
    else:
        from threadpoolctl import threadpool_info

        def run():
            return search_numpy(c, q, k)

        threads = [(i["internal_api"], i.get("num_threads"), i.get("architecture")) for i in threadpool_info()]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ids = run()
        times.append(time.perf_counter() - t)
    times.sort()
    ids.astype(np.int64).tofile(ids_out)
    secs = times[len(times) // 2]
    n, d = c.shape
    print(json.dumps({
        "impl": impl, "n": n, "nq": q.shape[0], "dim": d, "k": k, "seconds": secs, "all_seconds": times,
        "gflops": 2 * q.shape[0] * n * d / secs / 1e9, "threads": threads,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
