#!/usr/bin/env python3
"""Synthetic clustered unit vectors for the HNSW benchmark.

Real sentence embeddings are neither uniform on the sphere (where every
approximate index degrades to a scan) nor a few tight blobs: they sit near a
low-dimensional manifold.  So each point is ``centre_c + A_c z + e``: a cluster
centre, a per-cluster random ``RANK``-dimensional spread (the manifold), and a
little isotropic noise, then normalised.  Queries are drawn the same way, so
they land near the corpus as real queries do.  Deterministic for a given seed.

usage: make_data.py N OUT_CORPUS.npy OUT_QUERIES.npy [--nq 1000] [--dim 384] [--seed 0]
"""
import argparse

import numpy as np

RANK = 16  # intrinsic dimension inside a cluster
SPREAD = 0.6  # norm of the manifold offset relative to the unit centre
NOISE = 0.1  # norm of the isotropic noise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("corpus")
    ap.add_argument("queries")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=0, help="default: max(50, n // 1000)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    clusters = a.clusters or max(50, a.n // 1000)
    rng = np.random.default_rng(a.seed)
    d = a.dim
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, RANK, d), dtype=np.float32) * np.float32(SPREAD / np.sqrt(d * RANK))

    def draw(count):
        out = np.empty((count, d), dtype=np.float32)
        labels = rng.integers(0, clusters, size=count)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
        for c in range(clusters):
            idx = order[bounds[c] : bounds[c + 1]]
            if len(idx) == 0:
                continue
            z = rng.standard_normal((len(idx), RANK), dtype=np.float32)
            out[idx] = centres[c] + z @ bases[c]
        for start in range(0, count, 65536):
            block = out[start : start + 65536]
            block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(NOISE / np.sqrt(d))
            block /= np.linalg.norm(block, axis=1, keepdims=True)
        return out

    np.save(a.corpus, draw(a.n))
    np.save(a.queries, draw(a.nq))


if __name__ == "__main__":
    main()
