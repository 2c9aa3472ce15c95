"""A synthetic BEIR set for mining at scale: N documents of topic words, NQ queries with
one relevant document each, and clustered 384-d float32 embeddings (.npy) for both.

    make_synthetic.py N NQ OUT_DIR [SEED]

Documents of one cluster share topic words (BM25 finds them) and lie near the cluster's
centre (the dense side finds them); each query copies words of its relevant document
and lies near its embedding. Written in chunks so memory stays near one matrix.
"""
import json
import os
import sys

import numpy as np

n, nq, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 7
dim, clusters, vocab = 384, 2000, 30000
rng = np.random.default_rng(seed)
os.makedirs(os.path.join(out, "qrels"), exist_ok=True)
words = np.array([f"w{i}" for i in range(vocab)])
topic_words = rng.integers(0, vocab, size=(clusters, 40))
centres = rng.standard_normal((clusters, dim)).astype(np.float32)
centres /= np.linalg.norm(centres, axis=1, keepdims=True)
doc_cluster = rng.integers(0, clusters, size=n)

def npy_header(path, rows):
    f = open(path, "wb")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, dim)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    return f

doc_words = {}
chunk = 50000
with open(os.path.join(out, "corpus.jsonl"), "w") as cf, npy_header(os.path.join(out, "corpus.npy"), n) as ef:
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        c = doc_cluster[start:end]
        e = centres[c] + 0.35 * rng.standard_normal((end - start, dim)).astype(np.float32) / np.sqrt(dim) * 4
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        ef.write(e.astype("<f4").tobytes())
        topical = topic_words[c][np.arange(end - start)[:, None], rng.integers(0, 40, size=(end - start, 8))]
        background = rng.integers(0, vocab, size=(end - start, 12))
        for i in range(end - start):
            toks = words[np.concatenate([topical[i], background[i]])]
            text = " ".join(toks)
            cf.write(json.dumps({"_id": f"d{start + i}", "title": "", "text": text}) + "\n")
        print(f"documents {end}/{n}", file=sys.stderr)

qdocs = rng.choice(n, size=nq, replace=False)
with open(os.path.join(out, "corpus.jsonl")) as cf:
    wanted = set(int(d) for d in qdocs)
    texts = {}
    for i, line in enumerate(cf):
        if i in wanted:
            texts[i] = json.loads(line)["text"].split()
corpus = np.load(os.path.join(out, "corpus.npy"), mmap_mode="r")
with open(os.path.join(out, "queries.jsonl"), "w") as qf, open(os.path.join(out, "qrels", "train.tsv"), "w") as rf, \
        npy_header(os.path.join(out, "queries.npy"), nq) as ef:
    rf.write("query-id\tcorpus-id\tscore\n")
    q = np.asarray(corpus[qdocs]) + 0.5 * rng.standard_normal((nq, dim)).astype(np.float32) / np.sqrt(dim) * 4
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ef.write(q.astype("<f4").tobytes())
    for i, d in enumerate(qdocs):
        toks = texts[int(d)]
        pick = rng.choice(len(toks), size=5, replace=False)
        qf.write(json.dumps({"_id": f"q{i}", "text": " ".join(toks[j] for j in sorted(pick))}) + "\n")
        rf.write(f"q{i}\td{d}\t1\n")
print(f"wrote {out}: {n} documents, {nq} queries", file=sys.stderr)
