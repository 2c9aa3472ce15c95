"""The PyTorch side of bench/train/run.sh: sentence-transformers' MultipleNegativesRankingLoss
or CachedMultipleNegativesRankingLoss on the same pairs, batch size, sequence length and model
as `sieve train`, in a plain loop (no Trainer/DataLoader overhead: the peer at its best).

    python st_train.py MODEL PAIRS.jsonl {mnrl|cached} BATCH MINI SEQ STEPS

Dropout is switched off so that both sides compute the same function (sieve has none);
AdamW lr 2e-5, weight decay 0.01, grad-norm clipping 1.0, as sieve's defaults. Prints one
JSON line: pairs/s over the steps after the first, and peak RSS. DEVICE=cuda runs it on
the GPU (each step waits for the device; peak GPU memory is torch's own count).
"""
import json, os, resource, sys, time

import torch
from sentence_transformers import SentenceTransformer, losses

model_dir, pairs_path, kind, batch, mini, seq, steps = sys.argv[1:8]
batch, mini, seq, steps = int(batch), int(mini), int(seq), int(steps)
torch.manual_seed(0)
device = os.environ.get("DEVICE", "cpu")
model = SentenceTransformer(model_dir, device=device)
model.max_seq_length = seq
for m in model.modules():
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
model.train()
rows = [json.loads(l) for l in open(pairs_path)]
loss_fn = (losses.MultipleNegativesRankingLoss(model) if kind == "mnrl"
           else losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini))
opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)


def to_device(features):
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


times = []
for s in range(steps + 1):
    b = rows[(s * batch) % len(rows):][:batch]
    if len(b) < batch:
        b = (b + rows)[:batch]
    t0 = time.perf_counter()
    q = to_device(model.tokenize([r["query"] for r in b]))
    d = to_device(model.tokenize([r["positive"] for r in b]))
    loss = loss_fn([q, d], None)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
measured = times[1:]
print(json.dumps({
    "tool": "sentence-transformers", "loss": kind, "batch": batch, "mini": mini, "seq": seq,
    "steps": steps, "pairs_per_s": batch * len(measured) / sum(measured),
    "s_per_step": sum(measured) / len(measured),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
    **({"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20} if device.startswith("cuda") else {}),
}))
