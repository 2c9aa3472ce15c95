"""The peer of bench_exact: the same exact-softmax step in PyTorch, the way a user
would write it (all B x N scores at once, logsumexp, autograd to the queries), on a
table of N unit rows that holds no gradient.

    python bench/exact/torch_exact.py N [BATCH=32] [REPEATS=3]

Prints one JSON line like bench_exact's: median seconds per step, GFLOP/s of the two
table products (4 * batch * N * dim), peak RSS. Run with OMP_NUM_THREADS set to the
core count and OMP_WAIT_POLICY=PASSIVE (PyTorch at its best on a small machine).
"""
import json
import resource
import sys
import time

import torch

n = int(sys.argv[1])
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
dim = 384
g = torch.Generator().manual_seed(7)
table = torch.rand(n, dim, generator=g) - 0.5
table = table / table.norm(dim=1, keepdim=True)
q = (torch.rand(batch, dim, generator=g) - 0.5).requires_grad_(True)
times = []
for _ in range(repeats):
    t = time.perf_counter()
    qn = q / q.norm(dim=1, keepdim=True)
    loss = torch.logsumexp(20.0 * qn @ table.T, dim=1).mean()
    loss.backward()
    q.grad = None
    times.append(time.perf_counter() - t)
times.sort()
secs = times[len(times) // 2]
print(json.dumps({
    "impl": f"torch {torch.__version__}", "n": n, "batch": batch, "dim": dim,
    "seconds": secs, "all_seconds": times,
    "gflops": 4.0 * batch * n * dim / secs / 1e9,
    "threads": torch.get_num_threads(),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "table_mib": n * dim * 4 / 2**20,
}))
