"""The encoder's matrix products in PyTorch or numpy, on the shapes and with the same
transposed views as bench_gemm.rs (autograd's: forward x Wᵀ, dx = dy W, dW = dyᵀ x).
One JSON line per shape, median GFLOP/s over REPEATS after one warm-up.

    peers.py torch|numpy [REPEATS=7]
"""
import json, os, sys, time

SHAPES = [
    ("fwd qkv 4096x384 . 384x1152", 4096, 1152, 384, False, True),
    ("fwd out 4096x384 . 384x384", 4096, 384, 384, False, True),
    ("fwd ff1 4096x384 . 384x1536", 4096, 1536, 384, False, True),
    ("fwd ff2 4096x1536 . 1536x384", 4096, 384, 1536, False, True),
    ("dx qkv 4096x1152 . 1152x384", 4096, 384, 1152, False, False),
    ("dx out 4096x384 . 384x384", 4096, 384, 384, False, False),
    ("dx ff1 4096x1536 . 1536x384", 4096, 384, 1536, False, False),
    ("dx ff2 4096x384 . 384x1536", 4096, 1536, 384, False, False),
    ("dW qkv 1152x4096 . 4096x384", 1152, 384, 4096, True, False),
    ("dW out 384x4096 . 4096x384", 384, 384, 4096, True, False),
    ("dW ff1 1536x4096 . 4096x384", 1536, 384, 4096, True, False),
    ("dW ff2 384x4096 . 4096x1536", 384, 1536, 4096, True, False),
]

which = sys.argv[1]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
threads = os.cpu_count()
if which == "torch":
    import torch
    torch.set_num_threads(threads)
    mk = lambda r, c: torch.randn(r, c, dtype=torch.float32)
    mm = lambda a, b, out: torch.mm(a, b, out=out)
    empty = lambda r, c: torch.empty(r, c, dtype=torch.float32)
    lib = f"torch {torch.__version__}"
else:
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits
    threadpool_limits(threads)
    rng = np.random.default_rng(0)
    mk = lambda r, c: rng.standard_normal((r, c), dtype=np.float32)
    mm = lambda a, b, out: np.matmul(a, b, out=out)
    empty = lambda r, c: np.empty((r, c), dtype=np.float32)
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    lib = f"numpy {np.__version__} {blas[0].get('internal_api', '')} {blas[0].get('architecture', '')}" if blas else "numpy"

for name, m, n, k, ta, tb in SHAPES:
    a = mk(k, m).T if ta else mk(m, k)
    b = mk(n, k).T if tb else mk(k, n)
    out = empty(m, n)
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        mm(a, b, out)
        times.append(time.perf_counter() - t)
    times = sorted(times[1:])
    gf = 2.0 * m * n * k / times[len(times) // 2] / 1e9
    print(json.dumps({"impl": which, "lib": lib, "shape": name, "m": m, "n": n, "k": k,
                      "gflops": gf, "threads": threads}), flush=True)
