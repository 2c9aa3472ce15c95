"""The MedQuAD retrieval task: question -> answer retrieval, split by topic.

    python3 bench/medquad/make_task.py [--pairs ../shared/data/train/medquad/pairs.jsonl.gz]
                                       [--out data/medquad] [--seed 13] [--topics N]

Topics (`focus`) are shuffled with --seed and cut 80/10/10 into train/dev/test; topics that
share a question text are kept together (union-find), so no topic and no question text is in
two splits. The corpus is every distinct answer (all splits: retrieval is over the whole
collection). A question's relevant documents are every answer given to the same question
text. Writes BEIR directories (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv) and
train pairs (train-pairs.jsonl: one row per (question, answer)), and prints the split sizes.
--topics N keeps a seeded random N topics (and only their answers in the corpus) for runs
that must fit a small machine; the full task is the default.
"""
import argparse, collections, gzip, hashlib, json, os, random

ap = argparse.ArgumentParser()
ap.add_argument("--pairs", default="../shared/data/train/medquad/pairs.jsonl.gz")
ap.add_argument("--out", default="data/medquad")
ap.add_argument("--seed", type=int, default=13)
ap.add_argument("--topics", type=int, default=0)
a = ap.parse_args()

rows = [json.loads(l) for l in gzip.open(a.pairs, "rt")]
rows = [r for r in rows if r["query"].strip() and r["positive"].strip()]
# Union-find over topics linked by a shared question text.
parent = {}
def find(x):
    parent.setdefault(x, x)
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x
by_question = collections.defaultdict(set)
for r in rows:
    by_question[r["query"]].add(r["focus"])
for foci in by_question.values():
    foci = sorted(foci)
    for f in foci[1:]:
        parent[find(f)] = find(foci[0])
groups = collections.defaultdict(list)
for f in sorted({r["focus"] for r in rows}):
    groups[find(f)].append(f)
keys = sorted(groups)
rng = random.Random(a.seed)
rng.shuffle(keys)
if a.topics:
    keys = keys[: a.topics]
    keep = {f for k in keys for f in groups[k]}
    rows = [r for r in rows if r["focus"] in keep]
n = len(keys)
split_of = {}
for i, k in enumerate(keys):
    s = "train" if i < 0.8 * n else ("dev" if i < 0.9 * n else "test")
    for f in groups[k]:
        split_of[f] = s

def doc_id(text):
    return "a" + hashlib.sha1(text.encode()).hexdigest()[:12]
def query_id(text):
    return "q" + hashlib.sha1(text.encode()).hexdigest()[:12]

os.makedirs(f"{a.out}/qrels", exist_ok=True)
answers = {}
for r in rows:
    answers.setdefault(doc_id(r["positive"]), r["positive"])
with open(f"{a.out}/corpus.jsonl", "w") as f:
    for i, t in sorted(answers.items()):
        f.write(json.dumps({"_id": i, "title": "", "text": t}) + "\n")
rel = collections.defaultdict(set)     # question text -> answer ids
qsplit = {}
for r in rows:
    rel[r["query"]].add(doc_id(r["positive"]))
    qsplit[r["query"]] = split_of[r["focus"]]
with open(f"{a.out}/queries.jsonl", "w") as f:
    for q in sorted(rel):
        f.write(json.dumps({"_id": query_id(q), "text": q}) + "\n")
sizes = {}
for s in ("train", "dev", "test"):
    qs = [q for q in sorted(rel) if qsplit[q] == s]
    with open(f"{a.out}/qrels/{s}.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in qs:
            for d in sorted(rel[q]):
                f.write(f"{query_id(q)}\t{d}\t1\n")
    sizes[s] = (len({r['focus'] for r in rows if split_of[r['focus']] == s}), len(qs), sum(len(rel[q]) for q in qs))
with open(f"{a.out}/train-pairs.jsonl", "w") as f:
    for r in rows:
        if split_of[r["focus"]] == "train":
            f.write(json.dumps({"query": r["query"], "positive": r["positive"]}) + "\n")
multi = sum(1 for q in rel if len(rel[q]) > 1)
print(f"MedQuAD task (seed {a.seed}{', ' + str(a.topics) + ' topic groups' if a.topics else ''}): "
      f"corpus {len(answers)} answers; {len(rel)} questions, {multi} with 2+ answers")
for s, (t, q, p) in sizes.items():
    print(f"  {s:<5} {t:>5} topics {q:>6} questions {p:>6} relevant pairs")
