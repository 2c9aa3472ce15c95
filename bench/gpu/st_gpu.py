"""The PyTorch / sentence-transformers peers of bench_gpu, on the GPU (bench/gpu/check.sh).

    python st_gpu.py exact N [BATCH=32] [REPEATS=5]
        The exact-softmax step the way a PyTorch user writes it (all B x N scores,
        logsumexp, autograd to the queries) against a device-resident N x 384 table.
    python st_gpu.py encode MODEL PAIRS.jsonl [BATCH=256]
        SentenceTransformer.encode over every query and positive of PAIRS, after one
        warm-up batch (the same texts as `bench_gpu encode`).

Each prints one JSON line; times wait for the device (torch.cuda.synchronize).
"""
import json
import sys
import time

import torch

dim = 384


def exact(n, batch, repeats):
    g = torch.Generator(device="cuda").manual_seed(7)
    table = torch.rand(n, dim, generator=g, device="cuda") - 0.5
    table = table / table.norm(dim=1, keepdim=True)
    q = (torch.rand(batch, dim, generator=g, device="cuda") - 0.5).requires_grad_(True)
    times = []
    for i in range(repeats + 1):
        torch.cuda.synchronize()
        t = time.perf_counter()
        qn = q / q.norm(dim=1, keepdim=True)
        loss = torch.logsumexp(20.0 * qn @ table.T, dim=1).mean()
        loss.backward()
        q.grad = None
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    times.sort()
    secs = times[len(times) // 2]
    return {"check": "exact", "impl": f"torch {torch.__version__}", "n": n, "batch": batch,
            "seconds": secs, "all_seconds": times, "tflops": 4.0 * batch * n * dim / secs / 1e12,
            "tf32": torch.backends.cuda.matmul.allow_tf32,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}


def encode(model_dir, pairs, batch):
    from sentence_transformers import SentenceTransformer
    rows = [json.loads(l) for l in open(pairs)]
    texts = [r["query"] for r in rows] + [r["positive"] for r in rows]
    model = SentenceTransformer(model_dir, device="cuda")
    model.encode(texts[:batch], batch_size=batch)
    torch.cuda.synchronize()
    t = time.perf_counter()
    emb = model.encode(texts, batch_size=batch, convert_to_numpy=True)
    torch.cuda.synchronize()
    s = time.perf_counter() - t
    return {"check": "encode", "tool": "sentence-transformers", "texts": len(texts), "batch": batch,
            "seconds": s, "texts_per_s": len(texts) / s, "dim": int(emb.shape[1]),
            "max_seq_length": model.max_seq_length}


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "exact":
        a = [int(x) for x in sys.argv[2:]]
        print(json.dumps(exact(a[0], a[1] if len(a) > 1 else 32, a[2] if len(a) > 2 else 5)))
    elif cmd == "encode":
        print(json.dumps(encode(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 256)))
    else:
        sys.exit(f"unknown command {cmd}")
