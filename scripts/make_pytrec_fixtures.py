#!/usr/bin/env python3
"""Fixtures proving a Rust retrieval-metrics implementation equals pytrec_eval as MTEB uses it.

Writes into crates/eval/tests/fixtures/:
  scifact_run.tsv.gz, scifact_qrels.tsv, scifact_expected.json
      a real all-MiniLM-L6-v2 dense run (cosine, top 1000) for the first 60 SciFact
      test queries (sorted by query id as a string);
  synthetic_run.tsv, synthetic_qrels.tsv, synthetic_expected.json,
  synthetic_expected_ignore_identical.json
      a hand-made run hitting the edge cases (ties, graded / zero / negative qrels,
      missing queries, short runs, k up to 1000, a doc id equal to its query id).

Run files are TREC format `qid Q0 docid rank score tag`, space separated. The rank
column is only the line order; pytrec_eval (trec_eval) ignores it and orders each
query's docs itself by score descending, ties by docid descending (byte-wise strcmp).
Scores are compared after rounding to f32 (trec_eval stores them as C float).
In synthetic_run.tsv tied docs are deliberately written in ASCENDING docid order.

Qrels are BEIR TSV: header `query-id\tcorpus-id\tscore`.

Usage (after scripts/fetch-model.sh and scripts/setup-python.sh):
    OMP_NUM_THREADS=2 .venv/bin/python scripts/make_pytrec_fixtures.py            # both
    OMP_NUM_THREADS=2 .venv/bin/python scripts/make_pytrec_fixtures.py --only synthetic
The SciFact corpus embeddings are cached in <repo>/.cache/ (keyed by model sha256).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
from functools import cmp_to_key
from pathlib import Path

import pytrec_eval

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path(os.environ.get("SIEVE_MODELS_DIR", REPO / "models")) / "all-MiniLM-L6-v2"
DEFAULT_DATA = Path("/work/shared/data/scifact")
DEFAULT_OUT = REPO / "crates" / "eval" / "tests" / "fixtures"

K_VALUES = [1, 3, 5, 10, 20, 100, 1000]
KS = ",".join(map(str, K_VALUES))
MEASURES = {f"ndcg_cut.{KS}", f"map_cut.{KS}", f"recall.{KS}", f"P.{KS}", "recip_rank"}
# pytrec_eval key prefix -> MTEB name prefix
NAMES = {"ndcg_cut": "ndcg_at", "map_cut": "map_at", "recall": "recall_at", "P": "precision_at"}

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


# --------------------------------------------------------------------------- ordering
def as_f32(x: float) -> float:
    """trec_eval stores run scores as C `float`: round to f32 (overflow -> inf, underflow -> 0)."""
    import numpy as np
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float32(x))


def trec_cmp(a: tuple[str, float], b: tuple[str, float]) -> int:
    """trec_eval's order: score (rounded to f32) descending, then docid descending (strcmp)."""
    (da, sa), (db, sb) = a, b
    sa, sb = as_f32(sa), as_f32(sb)
    if sa != sb:  # note: 0.0 == -0.0 here, as in C
        return -1 if sa > sb else 1
    ba, bb = da.encode(), db.encode()
    return (ba < bb) - (ba > bb)


def trec_sorted(docs: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(docs.items(), key=cmp_to_key(trec_cmp))


# --------------------------------------------------------------------------- evaluation
def evaluate(qrels: Qrels, run: Run) -> dict:
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, MEASURES)
    raw = evaluator.evaluate(run)
    per_query: dict[str, dict[str, float]] = {}
    for qid, scores in raw.items():
        out = {}
        for key, val in scores.items():
            if key == "recip_rank":
                out["recip_rank"] = val
                continue
            prefix, k = key.rsplit("_", 1)
            out[f"{NAMES[prefix]}_{k}"] = val
        per_query[qid] = out
    # mrr_at_k: recip_rank on the run truncated to its top k under trec_eval's order.
    for k in K_VALUES:
        truncated = {q: dict(trec_sorted(docs)[:k]) for q, docs in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncated)
        assert set(rr) == set(per_query), (set(rr) ^ set(per_query))
        for qid, scores in rr.items():
            per_query[qid][f"mrr_at_{k}"] = scores["recip_rank"]
    order = [f"{m}_{k}" for m in ("ndcg_at", "map_at", "recall_at", "precision_at", "mrr_at")
             for k in K_VALUES] + ["recip_rank"]
    per_query = {q: {m: per_query[q][m] for m in order} for q in sorted(per_query)}
    n = len(per_query)
    mean = {m: (sum(s[m] for s in per_query.values()) / n if n else 0.0) for m in order}
    return {
        "k_values": K_VALUES,
        "pytrec_eval_measures": sorted(MEASURES),
        "n_queries": n,
        "mean": mean,
        "per_query": per_query,
    }


# --------------------------------------------------------------------------- io
def write_run(path: Path, run: Run, tag: str, line_order=None) -> None:
    """Write TREC run lines. line_order(docs) -> list[(docid, score)] (default trec order)."""
    order = line_order or trec_sorted
    lines = []
    for qid in sorted(run):
        for rank, (doc, score) in enumerate(order(run[qid]), start=1):
            lines.append(f"{qid} Q0 {doc} {rank} {float(score)!r} {tag}\n")
    data = "".join(lines).encode("utf-8")
    if path.suffix == ".gz":  # reproducible gzip: no name, mtime 0
        with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)


def write_qrels(path: Path, qrels: Qrels) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid in sorted(qrels):
            for doc in sorted(qrels[qid]):
                f.write(f"{qid}\t{doc}\t{qrels[qid][doc]}\n")


def write_json(path: Path, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def reread_run(path: Path) -> Run:
    opener = gzip.open if path.suffix == ".gz" else open
    run: Run = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            qid, _q0, doc, _rank, score, _tag = line.split()
            run.setdefault(qid, {})[doc] = float(score)
    return run


def reread_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        r = csv.reader(f, delimiter="\t")
        next(r)
        for qid, doc, score in r:
            qrels.setdefault(qid, {})[doc] = int(score)
    return qrels


# --------------------------------------------------------------------------- SciFact
def scifact(args) -> None:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    data = args.data
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    queries = {}
    with open(data / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    qrels_all: Qrels = {}
    with open(data / "qrels" / "test.tsv", encoding="utf-8") as f:
        r = csv.reader(f, delimiter="\t")
        header = next(r)
        assert header == ["query-id", "corpus-id", "score"], header
        for qid, doc, score in r:
            qrels_all.setdefault(qid, {})[doc] = int(score)
    qids = sorted(qrels_all)[: args.n_queries]
    qrels = {q: qrels_all[q] for q in qids}

    model_sha = hashlib.sha256((args.model / "model.safetensors").read_bytes()).hexdigest()
    model = SentenceTransformer(str(args.model), device="cpu")
    doc_ids = [d["_id"] for d in corpus]
    doc_texts = [(d.get("title", "") + " " + d.get("text", "")).strip() for d in corpus]

    cache = REPO / ".cache" / f"scifact_corpus_minilm_{model_sha[:16]}_{len(corpus)}.npy"
    if cache.exists():
        doc_emb = np.load(cache)
        print(f"scifact: corpus embeddings from cache {cache}")
    else:
        print(f"scifact: encoding {len(doc_texts)} docs (a few minutes on 2 cores)")
        doc_emb = model.encode(doc_texts, batch_size=32, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, doc_emb)
    q_emb = model.encode([queries[q] for q in qids], batch_size=32, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    sims = (torch.from_numpy(q_emb) @ torch.from_numpy(doc_emb).T).numpy()  # float32

    run: Run = {}
    for i, qid in enumerate(qids):
        docs = {doc_ids[j]: float(sims[i, j]) for j in range(len(doc_ids))}
        run[qid] = dict(trec_sorted(docs)[:1000])

    out = args.out
    write_run(out / "scifact_run.tsv.gz", run, "all-MiniLM-L6-v2")
    write_qrels(out / "scifact_qrels.tsv", qrels)
    # Evaluate exactly what a reader of the files sees.
    run_r, qrels_r = reread_run(out / "scifact_run.tsv.gz"), reread_qrels(out / "scifact_qrels.tsv")
    assert run_r == run and qrels_r == qrels
    res = evaluate(qrels_r, run_r)
    res["description"] = (
        f"SciFact test, first {len(qids)} queries sorted by query id (string); "
        "sentence-transformers all-MiniLM-L6-v2 (cosine of normalized float32 embeddings, "
        "doc text = (title + ' ' + text).strip(), max_seq_length 256), top 1000 per query; "
        "metrics from pytrec_eval, mean over the queries pytrec_eval returns")
    res["model_sha256"] = model_sha
    write_json(out / "scifact_expected.json", res)
    print(f"scifact: {len(qids)} queries; ndcg@10 {res['mean']['ndcg_at_10']:.5f} "
          f"recall@100 {res['mean']['recall_at_100']:.5f}")


# --------------------------------------------------------------------------- synthetic
def synthetic_data() -> tuple[Qrels, Run, dict[str, str]]:
    qrels: Qrels = {}
    run: Run = {}
    notes: dict[str, str] = {}

    # s01: heavy ties with graded relevance; tied docids of different lengths / leading zeros.
    run["s01"] = {"d1": 0.9, "d2": 0.5, "d10": 0.5, "d9": 0.5, "d010": 0.5, "d100": 0.5,
                  "D2": 0.5, "e": 0.5, "d3": 0.1, "d4": 0.1, "d5": 0.0}
    qrels["s01"] = {"d10": 3, "d9": 1, "d2": 2, "d5": 1, "D2": 1, "dx": 2}
    notes["s01"] = "7 docs tied at 0.5 with docids d2,d10,d9,d010,d100,D2,e (byte order matters: 'e'>'d9'>'d2'>'d100'>'d10'>'d010'>'D2'); graded rels 1-3; one relevant doc (dx) never retrieved"

    # s02: every doc tied; the tie order alone decides everything.
    run["s02"] = {f"doc{i}": 1.0 for i in range(1, 31)}
    qrels["s02"] = {"doc1": 1, "doc30": 1, "doc5": 2, "doc12": 0}
    notes["s02"] = "30 docs all tied at 1.0 (doc1..doc30); order is purely docid descending"

    # s03: qrels with score 0 at the top of the run; relevance starts at 1.
    run["s03"] = {"a": 10.0, "b": 9.0, "c": 8.0, "d": 7.0, "e": 6.0, "f": 5.0}
    qrels["s03"] = {"a": 0, "b": 0, "c": 1, "f": 2, "z": 0}
    notes["s03"] = "judged-non-relevant (score 0) docs ranked first; a zero-judged doc (z) not retrieved"

    # s04: only zero judgments -> no relevant docs at all (pytrec_eval still reports it, all 0).
    run["s04"] = {"a": 1.0, "b": 0.5}
    qrels["s04"] = {"a": 0, "c": 0}
    notes["s04"] = "query whose qrels are all 0: no relevant docs; returned with every metric 0"

    # s05: negative qrels scores.
    run["s05"] = {"neg": 3.0, "pos": 2.0, "zero": 1.0, "pos2": 0.5}
    qrels["s05"] = {"neg": -1, "pos": 1, "zero": 0, "pos2": 2, "neg2": -2}
    notes["s05"] = "negative judgments (-1, -2): count as non-relevant and contribute gain 0 to nDCG"

    # s06: run shorter than every k > 3; some relevant docs missing.
    run["s06"] = {"x1": 0.3, "x2": 0.2, "x3": 0.1}
    qrels["s06"] = {"x2": 1, "x3": 1, "y1": 1, "y2": 1, "y3": 1}
    notes["s06"] = "3-doc run, 5 relevant docs (3 never retrieved): P@k divides by k, not by run length"

    # s07: relevant doc absent from run entirely.
    run["s07"] = {f"n{i:02d}": 1.0 - i / 100 for i in range(25)}
    qrels["s07"] = {"missing": 1}
    notes["s07"] = "the only relevant doc is not in the run: all metrics 0"

    # s08: in run, not in qrels -> not evaluated at all.
    run["s08"] = {"a": 1.0, "b": 0.5}
    notes["s08"] = "in the run but not in the qrels: pytrec_eval returns nothing for it"

    # s09: in qrels, not in run -> not evaluated (trec_eval without -c).
    qrels["s09"] = {"a": 1, "b": 2}
    notes["s09"] = "in the qrels but not in the run: pytrec_eval returns nothing for it (not counted as 0)"

    # s10: a doc whose id equals the query id, ranked first (MTEB ignore_identical_ids).
    run["s10"] = {"s10": 0.99, "p1": 0.8, "p2": 0.7, "p3": 0.6, "p4": 0.6}
    qrels["s10"] = {"p2": 1, "p4": 1}
    notes["s10"] = "run contains doc 's10' (same id as the query) at rank 1; removed under ignore_identical_ids"

    # s11: the identical doc is the ONLY doc -> empty result after removal, but still evaluated.
    run["s11"] = {"s11": 0.5}
    qrels["s11"] = {"r": 1}
    notes["s11"] = "only doc is 's11' (= query id): after ignore_identical_ids its result set is empty; pytrec_eval still returns the query (all 0), so it stays in the mean"

    # s12: long run (1200 docs) with relevant docs around the 100 / 1000 cutoffs and a tie
    # group straddling rank 10; more relevant docs than small k.
    docs12 = {f"L{i:04d}": round(1.0 - i * 0.0005, 6) for i in range(1200)}
    for i in range(7, 14):  # ranks 8..14 tied
        docs12[f"L{i:04d}"] = 0.9955
    run["s12"] = docs12
    rel12 = {f"L{i:04d}": 1 for i in (0, 8, 12, 13, 50, 99, 100, 101, 998, 999, 1000, 1150)}
    rel12.update({"L0007": 2, "L0002": 3, "absent1": 1, "absent2": 3})
    qrels["s12"] = rel12
    notes["s12"] = "1200-doc run; relevant docs at ranks near 10/100/1000 cutoffs, beyond 1000 and absent; ranks 8-14 tied at 0.9955"

    # s13: signed zero, negative scores, nearly-equal doubles.
    run["s13"] = {"pz": 0.0, "nz": -0.0, "aa": -0.0, "m1": -1.5, "m2": -1.5,
                  "close1": 0.30000000000000004, "close2": 0.3, "big": 1e300, "tiny": 5e-324}
    qrels["s13"] = {"nz": 1, "close2": 2, "m1": 1}
    notes["s13"] = ("pytrec_eval/trec_eval keep run scores as C float (f32): 0.30000000000000004 and 0.3 TIE "
                    "(same f32), 5e-324 rounds to 0 and ties with 0.0 and -0.0 (0.0 == -0.0), 1e300 "
                    "overflows to inf; negative scores")

    # s14: many relevant docs (25) scattered, graded; k=20/100 matter; MAP divides by all rel.
    docs14 = {f"m{i:03d}": 100.0 - i for i in range(150)}
    run["s14"] = docs14
    qrels["s14"] = {f"m{i:03d}": (i % 3) + 1 for i in range(0, 150, 6)}
    notes["s14"] = "25 relevant docs (grades 1-3) every 6th rank over a 150-doc run"

    # s15: single doc, relevant.
    run["s15"] = {"only": 0.1}
    qrels["s15"] = {"only": 1}
    notes["s15"] = "single retrieved doc, relevant: perfect scores, P@k = 1/k"

    # s16: numeric-looking ids (string compare, not numeric) all tied, identical-id doc in a tie.
    run["s16"] = {"9": 0.4, "10": 0.4, "100": 0.4, "s16": 0.4, "2": 0.4, "11": 0.2}
    qrels["s16"] = {"10": 1, "2": 1, "11": 1, "s16": 1}
    notes["s16"] = "numeric-looking docids tied (string order: 's16'>'9'>'2'>'100'>'10'); the identical-id doc s16 is judged relevant here, so ignore_identical_ids changes the score"

    return qrels, run, notes


def synthetic(args) -> None:
    qrels, run, notes = synthetic_data()
    out = args.out

    def ascending_ties(docs):  # score desc, ties by docid ASCENDING (opposite of trec_eval)
        return sorted(docs.items(), key=lambda kv: (-kv[1], kv[0].encode()))

    write_run(out / "synthetic_run.tsv", run, "synthetic", line_order=ascending_ties)
    write_qrels(out / "synthetic_qrels.tsv", qrels)
    run_r, qrels_r = reread_run(out / "synthetic_run.tsv"), reread_qrels(out / "synthetic_qrels.tsv")
    assert qrels_r == qrels
    assert {q: {d: s for d, s in v.items()} for q, v in run_r.items()} == run
    # repr round-trips, but -0.0 must stay -0.0
    assert str(run_r["s13"]["nz"]) == "-0.0"

    res = evaluate(qrels_r, run_r)
    res["description"] = "synthetic edge cases; mean over the queries pytrec_eval returns"
    res["notes"] = notes
    write_json(out / "synthetic_expected.json", res)

    ignored = {q: {d: s for d, s in docs.items() if d != q} for q, docs in run_r.items()}
    res2 = evaluate(qrels_r, ignored)
    res2["description"] = ("synthetic edge cases after MTEB 1.x ignore_identical_ids (every doc whose "
                           "id equals its query id removed from the results; a query left with no "
                           "docs keeps an empty result and is still evaluated)")
    res2["notes"] = notes
    write_json(out / "synthetic_expected_ignore_identical.json", res2)
    print(f"synthetic: {len(run)} run queries, {len(qrels)} qrels queries, "
          f"{res['n_queries']} evaluated; ndcg@10 {res['mean']['ndcg_at_10']:.5f} "
          f"(ignore identical {res2['mean']['ndcg_at_10']:.5f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n-queries", type=int, default=60)
    ap.add_argument("--only", choices=["scifact", "synthetic"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "synthetic"):
        synthetic(args)
    if args.only in (None, "scifact"):
        scifact(args)


if __name__ == "__main__":
    main()
