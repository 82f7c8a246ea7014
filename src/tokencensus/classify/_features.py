"""Text features of the local classifier: numpy only, no torch.

Two views of the first 1,000 characters, both from one pass of a WordPiece tokenizer
(``tokenizers``, Rust, parallel):

- a dense *static embedding*: the mean of per-token vectors distilled from all-MiniLM-L6-v2
  with ``model2vec`` (PCA-reduced, stored int8 with one float scale per token row), L2-normed;
- a sparse *token n-gram TF-IDF*: token-id unigrams (one column per vocabulary entry) and
  hashed token-id bigrams, sublinear tf, idf from training, L2-normed; plus hashed character
  trigrams of the first :data:`CHAR_WINDOW` characters, which carry what an English WordPiece
  vocabulary splits badly (Chinese, Japanese, Korean, Cyrillic words; card markup).

The same tokenizer pass feeds both, so the features cost little more than the embedding alone.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse
from tokenizers import Tokenizer

MAX_TOKENS = 384  # 1,000 characters rarely exceed this in WordPiece tokens
N_BIGRAM = 1 << 15
_BIGRAM_MUL = np.int64(1_000_003)
N_CHAR = 1 << 16
CHAR_WINDOW = 300


def clean_text(text: object) -> str:
    """Any input -> a string safe for the tokenizer (NUL and lone surrogates removed)."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    text = text[:1000]
    if "\x00" in text:
        text = text.replace("\x00", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def load_tokenizer(path: Path) -> Tokenizer:
    """A ``tokenizers`` tokenizer from ``tokenizer.json`` or ``tokenizer.json.gz``."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    tok = Tokenizer.from_str(raw.decode("utf-8"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def quantize_rows(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float matrix -> (int8 matrix, float32 scale per row)."""
    scale = np.abs(mat).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(mat / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


class Featurizer:
    """Tokenizer + static token vectors + idf: texts -> (dense, sparse) features."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        vectors: np.ndarray,
        idf: np.ndarray | None = None,
        special_ids: Sequence[int] = (),
        n_char: int = N_CHAR,
        char_window: int = CHAR_WINDOW,
    ) -> None:
        self.tokenizer = tokenizer
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.vocab_size = self.vectors.shape[0]
        self.dim = self.vectors.shape[1]
        self.n_char = n_char
        self.char_window = char_window
        self.n_sparse = self.vocab_size + N_BIGRAM + n_char
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        self.special = np.zeros(self.vocab_size, dtype=bool)
        for i in special_ids:
            if i is not None and 0 <= i < self.vocab_size:
                self.special[i] = True

    # -- persistence -----------------------------------------------------------------
    @classmethod
    def load(cls, folder: Path) -> Featurizer:
        from safetensors.numpy import load_file

        tok_path = folder / "tokenizer.json.gz"
        if not tok_path.exists():
            tok_path = folder / "tokenizer.json"
        tok = load_tokenizer(tok_path)
        arrays = load_file(str(folder / "static.safetensors"))
        q = arrays["embeddings_int8"].astype(np.float32)
        vectors = q * arrays["scales"][:, None]
        meta = json.loads((folder / "static.json").read_text(encoding="utf-8"))
        return cls(
            tok,
            vectors,
            arrays.get("idf"),
            meta.get("special_ids", ()),
            n_char=meta.get("n_char", 0),  # models trained before char trigrams have none
            char_window=meta.get("char_window", CHAR_WINDOW),
        )

    def save(self, folder: Path, tokenizer_json: str) -> None:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer.json.gz").write_bytes(
            gzip.compress(tokenizer_json.encode("utf-8"), compresslevel=9, mtime=0)
        )
        q, scale = quantize_rows(self.vectors)
        arrays = {"embeddings_int8": q, "scales": scale}
        if self.idf is not None:
            arrays["idf"] = self.idf.astype(np.float16)
        save_file(arrays, str(folder / "static.safetensors"))
        meta = {
            "special_ids": [int(i) for i in np.flatnonzero(self.special)],
            "max_tokens": MAX_TOKENS,
            "n_bigram": N_BIGRAM,
            "n_char": self.n_char,
            "char_window": self.char_window,
        }
        (folder / "static.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    # -- features --------------------------------------------------------------------
    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text, special tokens dropped."""
        encs = self.tokenizer.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        out = []
        for e in encs:
            ids = np.asarray(e.ids, dtype=np.int64)
            if ids.size:
                ids = ids[~self.special[ids]]
            out.append(ids)
        return out

    def char_trigrams(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of each hashed character trigram of each text's first
        ``char_window`` characters (lower-cased), for the whole batch at once."""
        if not self.n_char or not texts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        heads = [clean_text(t)[: self.char_window].lower() for t in texts]
        lens = np.fromiter((len(h) + 1 for h in heads), dtype=np.int64, count=len(heads))
        cps = np.frombuffer("\x00".join(heads).encode("utf-32-le"), dtype=np.uint32)
        cps = np.append(cps, np.uint32(0)).astype(np.int64)  # texts end in a 0 separator
        rows = np.repeat(np.arange(len(heads), dtype=np.int64), lens)
        a, b, c = cps[:-2], cps[1:-1], cps[2:]
        ok = (a != 0) & (b != 0) & (c != 0)  # no trigram across two texts
        h = ((a[ok] * _BIGRAM_MUL + b[ok]) * _BIGRAM_MUL + c[ok]) % self.n_char
        return rows[:-2][ok], h + self.vocab_size + N_BIGRAM

    def counts(
        self, ids_list: Sequence[np.ndarray], texts: Sequence[str] | None = None
    ) -> sparse.csr_matrix:
        """Raw unigram + hashed bigram (+ character trigram, given ``texts``) counts (rows:
        texts), built without a Python loop."""
        n = len(ids_list)
        lens = np.fromiter((ids.size for ids in ids_list), dtype=np.int64, count=n)
        cr, ccol = self.char_trigrams(texts) if texts is not None else (np.zeros(0, np.int64),) * 2
        if lens.sum() == 0 and cr.size == 0:
            return sparse.csr_matrix((n, self.n_sparse), dtype=np.float32)
        ids = np.concatenate([i for i in ids_list if i.size] or [np.zeros(0, np.int64)])
        rows = np.repeat(np.arange(n, dtype=np.int64), lens)
        same = rows[:-1] == rows[1:]  # adjacent tokens of one text
        bi = (ids[:-1][same] * _BIGRAM_MUL + ids[1:][same]) % N_BIGRAM + self.vocab_size
        rr = np.concatenate([rows, rows[:-1][same], cr])
        cc = np.concatenate([ids, bi, ccol])
        m = sparse.csr_matrix(
            (np.ones(rr.size, dtype=np.float32), (rr, cc)), shape=(n, self.n_sparse)
        )
        m.sum_duplicates()
        return m

    def fit_idf(self, texts: Sequence[str]) -> None:
        """Smoothed idf from training texts (sklearn's formula)."""
        m = self.counts(self.token_ids(texts), texts)
        df = np.bincount(m.indices, minlength=self.n_sparse).astype(np.float64)
        n = m.shape[0]
        self.idf = (np.log((1 + n) / (1 + df)) + 1.0).astype(np.float32)

    def transform(self, texts: Sequence[str]) -> tuple[np.ndarray, sparse.csr_matrix]:
        """(dense embeddings [n, dim] L2-normed, sparse tf-idf [n, n_sparse] L2-normed)."""
        ids_list = self.token_ids(texts)
        m = self.counts(ids_list, texts)
        # mean of token vectors (unigram counts @ vectors), then L2-normed
        dense = np.asarray(m[:, : self.vocab_size] @ self.vectors, dtype=np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        dense /= norms
        m.data = 1.0 + np.log(m.data)
        if self.idf is not None:
            m.data *= self.idf[m.indices]
        sq = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        sq[sq == 0] = 1.0
        m = sparse.diags(1.0 / sq).dot(m).tocsr().astype(np.float32)
        return dense, m

    def n_tokens(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([ids.size for ids in self.token_ids(texts)])
