"""A hidden-positive benchmark from real data: false negatives with an oracle.

    python3 bench/filtering/make_benchmark.py --source climate-fever --out DIR [--seed 13]
    python3 bench/filtering/make_benchmark.py --source medquad --out DIR [--train-queries N]
                                              [--partial-copies 0.5]

Takes queries that have two or more relevant documents (Climate-FEVER claims with several
evidence sentences; MedQuAD questions answered by several NIH sources), keeps one of them
(seeded) as the labelled positive and leaves the others in the corpus, unlabelled: known
false negatives, the situation of sparse-label data. Writes a BEIR directory:

  corpus.jsonl, queries.jsonl
  qrels/train.tsv        every relevant pair of a train query: score 2 = the labelled
                         positive, score 1 = a hidden positive (the oracle). Train with
                         `sieve train --min-positive-score 2`: the score-1 pairs are then
                         `known` (masked with --false-negatives mask, ignored with
                         --ignore-known-positives, measured in the dose either way).
  qrels/train-sparse.tsv the labelled positives alone (what a sparse-label dataset gives)
  qrels/test.tsv         every relevant pair of a test query, hidden ones included
  qrels/test-sparse.tsv  the labelled positive of each test query alone
  hidden.tsv             query-id, doc-id, query, document of every hidden train pair
  benchmark.json         sizes and the command that made it

MedQuAD: (--topics N: a seeded N topic groups and their answers only) split by topic (`focus`, topics sharing a question text kept together) as
bench/medquad/make_task.py does, 80/20 train/test; train queries are the questions with two
or more answers plus, with --train-queries N, a seeded sample of the single-answer ones up
to N (for the scaling chart: more data, same test split). --partial-copies F adds, for a
seeded fraction F of the train questions, a copy of its labelled answer cut to the first
half of its sentences, as one more unlabelled relevant document (score 1): the near
duplicate that chunked corpora are full of. Climate-FEVER: claims split 70/30; the corpus is
every evidence sentence (judged positive or NOT_ENOUGH_INFO), titled with its article.
"""
import argparse, collections, gzip, hashlib, json, os, random, re, sys

ap = argparse.ArgumentParser()
ap.add_argument("--source", choices=["climate-fever", "medquad"], required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--data", default="../shared/data")
ap.add_argument("--seed", type=int, default=13)
ap.add_argument("--train-queries", type=int, default=0,
                help="medquad: train questions in all (multi-answer ones first); 0 = multi-answer only")
ap.add_argument("--partial-copies", type=float, default=0.0)
ap.add_argument("--topics", type=int, default=0,
                help="medquad: keep a seeded N topic groups (and only their answers) so that a grid fits a small machine")
ap.add_argument("--test-fraction", type=float, default=0.3)
a = ap.parse_args()

def hid(prefix, text):
    return prefix + hashlib.sha1(text.encode()).hexdigest()[:12]

rng = random.Random(a.seed)
docs = {}          # doc id -> (title, text)
rel = {}           # query text -> ordered list of doc ids
split = {}         # query text -> "train" | "test"

if a.source == "climate-fever":
    path = f"{a.data}/train/climate-fever/claims_evidence.jsonl.gz"
    rows = [json.loads(l) for l in gzip.open(path, "rt")]
    for r in rows:
        for e in r["positives"] + r["judged_negatives"]:
            docs.setdefault(hid("e", e["text"]), (e["article"], e["text"]))
    claims = [r for r in rows if r["positives"] and r["query"].strip()]
    rng.shuffle(claims)
    cut = int(round(len(claims) * (1 - a.test_fraction)))
    for i, r in enumerate(claims):
        ids = list(dict.fromkeys(hid("e", e["text"]) for e in r["positives"]))
        rel[r["query"]] = ids
        split[r["query"]] = "train" if i < cut else "test"
else:
    path = f"{a.data}/train/medquad/pairs.jsonl.gz"
    rows = [json.loads(l) for l in gzip.open(path, "rt")]
    rows = [r for r in rows if r["query"].strip() and r["positive"].strip()]
    parent = {}
    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    by_q = collections.defaultdict(set)
    for r in rows:
        by_q[r["query"]].add(r["focus"])
    for foci in by_q.values():
        foci = sorted(foci)
        for f in foci[1:]:
            parent[find(f)] = find(foci[0])
    groups = collections.defaultdict(list)
    for f in sorted({r["focus"] for r in rows}):
        groups[find(f)].append(f)
    keys = sorted(groups)
    rng.shuffle(keys)
    if a.topics:
        keys = keys[: a.topics]
        keep = {f for k in keys for f in groups[k]}
        rows = [r for r in rows if r["focus"] in keep]
    split_of = {}
    for i, k in enumerate(keys):
        for f in groups[k]:
            split_of[f] = "train" if i < (1 - a.test_fraction) * len(keys) else "test"
    for r in rows:
        docs.setdefault(hid("a", r["positive"]), ("", r["positive"]))
        ids = rel.setdefault(r["query"], [])
        d = hid("a", r["positive"])
        if d not in ids:
            ids.append(d)
        split[r["query"]] = split_of[r["focus"]]

# Train queries: the multi-positive ones (and, for medquad, a sample of the rest).
train_multi = sorted(q for q in rel if split[q] == "train" and len(rel[q]) >= 2)
train_single = sorted(q for q in rel if split[q] == "train" and len(rel[q]) == 1)
rng.shuffle(train_single)
extra = max(0, a.train_queries - len(train_multi)) if a.train_queries else 0
train = sorted(train_multi + train_single[:extra])
test = sorted(q for q in rel if split[q] == "test")

# Keep one labelled positive per query, seeded; the rest are hidden. MedQuAD draws it per
# question (and the partial copies too), so that every --train-queries size shares the same
# labels and test split.
def qrng(q):
    return random.Random(f"{a.seed}:{q}") if a.source == "medquad" else rng
kept = {q: qrng(q).choice(rel[q]) for q in train + test}

# Partial copies: first half of the sentences of the labelled answer.
partial = {}
if a.partial_copies > 0:
    for q in train:
        if qrng(q).random() >= a.partial_copies:
            continue
        title, text = docs[kept[q]]
        sents = re.split(r"(?<=[.!?])\s+", text.strip())
        if len(sents) < 2:
            continue
        half = " ".join(sents[: (len(sents) + 1) // 2])
        d = hid("p", half)
        docs.setdefault(d, (title, half))
        partial[q] = d

os.makedirs(f"{a.out}/qrels", exist_ok=True)
with open(f"{a.out}/corpus.jsonl", "w") as f:
    for i, (title, text) in sorted(docs.items()):
        f.write(json.dumps({"_id": i, "title": title, "text": text}) + "\n")
with open(f"{a.out}/queries.jsonl", "w") as f:
    for q in train + test:
        f.write(json.dumps({"_id": hid("q", q), "text": q}) + "\n")

def write(name, pairs):
    with open(f"{a.out}/qrels/{name}.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, d, s in pairs:
            f.write(f"{hid('q', q)}\t{d}\t{s}\n")

hidden = []
train_pairs = []
for q in train:
    train_pairs.append((q, kept[q], 2))
    for d in rel[q] + ([partial[q]] if q in partial else []):
        if d != kept[q]:
            train_pairs.append((q, d, 1))
            hidden.append((q, d))
write("train", train_pairs)
write("train-sparse", [(q, kept[q], 1) for q in train])
write("test", [(q, d, 1) for q in test for d in rel[q]])
write("test-sparse", [(q, kept[q], 1) for q in test])
with open(f"{a.out}/hidden.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tquery\tdocument\n")
    for q, d in hidden:
        t = docs[d][1].replace("\t", " ").replace("\n", " ")
        f.write(f"{hid('q', q)}\t{d}\t{q}\t{t}\n")
info = {
    "command": " ".join(["python3"] + sys.argv),
    "source": a.source,
    "documents": len(docs),
    "train_queries": len(train),
    "train_queries_with_hidden": len({q for q, _ in hidden}),
    "hidden_pairs": len(hidden),
    "partial_copies": len(partial),
    "test_queries": len(test),
    "test_pairs": sum(len(rel[q]) for q in test),
    "test_queries_multi": sum(1 for q in test if len(rel[q]) >= 2),
}
json.dump(info, open(f"{a.out}/benchmark.json", "w"), indent=1)
print(json.dumps(info))
