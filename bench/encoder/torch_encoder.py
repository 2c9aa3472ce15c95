#!/usr/bin/env python3
"""PyTorch half of bench/encoder: forward and forward+backward+AdamW of the same BERT,
same shapes and loss as crates/encoder/examples/bench_encoder.rs. One JSON line.

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/encoder/torch_encoder.py \
        MODEL_DIR {forward|train} {fixed|texts FILE} [BATCH] [SEQ] [STEPS]
"""
import json
import sys
import time

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer


def forward_flops(cfg, s):
    h, i, l = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    return l * s * (2.0 * (4.0 * h * h + 2.0 * h * i) + 4.0 * s * h)


def main():
    a = sys.argv[1:]
    model_dir, mode, src = a[0], a[1], a[2]
    rest = a[4:] if src == "texts" else a[3:]
    nums = [int(x) for x in rest] + [None] * 3
    batch, seq, steps = nums[0] or 32, nums[1] or 128, nums[2] or 5
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if src == "fixed":
        batches = []
        for b in range(steps + 1):
            ids = torch.tensor([[1000 + (b * 7919 + i * 104729 + t * 31) % 20000 for t in range(seq)] for i in range(batch)])
            batches.append((ids, torch.ones_like(ids)))
    else:
        texts = open(a[3]).read().splitlines()[: batch * (steps + 1)]
        batches = []
        for k in range(0, len(texts), batch):
            enc = tok(texts[k : k + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            batches.append((enc["input_ids"], enc["attention_mask"]))
    cfg = model.config
    flops = sum(forward_flops(cfg, ids.shape[1]) * ids.shape[0] for ids, _ in batches[1:])
    probe = torch.randn(batch, cfg.hidden_size)

    def embed(ids, mask):
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return (out * m).sum(1) / m.sum(1).clamp(min=1e-9)

    if mode == "forward":
        model.eval()
        with torch.inference_mode():
            embed(*batches[0])
            t = time.perf_counter()
            for ids, mask in batches[1:]:
                embed(ids, mask)
            secs = time.perf_counter() - t
    else:
        model.train()
        # Dropout off, as in sieve's forward, so that both do the same arithmetic.
        for mod in model.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(ids, mask):
            opt.zero_grad(set_to_none=True)
            loss = (embed(ids, mask) * probe[: ids.shape[0]]).sum()
            loss.backward()
            opt.step()

        step(*batches[0])
        t = time.perf_counter()
        for ids, mask in batches[1:]:
            step(ids, mask)
        secs = time.perf_counter() - t
        flops *= 3
    n = 2048
    x, y = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    tx @ ty
    best = min((lambda: (lambda t0: (tx @ ty, time.perf_counter() - t0)[1])(time.perf_counter()))() for _ in range(3))
    seqs = sum(ids.shape[0] for ids, _ in batches[1:])
    tokens = int(sum(m.sum() for _, m in batches[1:]))
    print(json.dumps({"tool": "pytorch", "mode": mode, "input": src if src == "fixed" else a[3], "batch": batch,
                      "seq": seq, "steps": steps, "tokens": tokens, "seconds": secs, "seq_per_s": seqs / secs,
                      "s_per_step": secs / steps, "gflops": flops / secs / 1e9,
                      "gemm_peak_gflops": 2 * n ** 3 / best / 1e9, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
