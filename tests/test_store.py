"""The metadata-only store: settings recorded, incremental runs, a reproducible Parquet export."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from tests.conftest import split_demo as _split_demo
from tokencensus import pipeline
from tokencensus.classify import Classifier
from tokencensus.sample import u_value
from tokencensus.store import DB_NAME, Store, canonical_dump

KEY = "store-test-key-0123456789abcdef"


def split_demo(folder: Path, n: int, files: int, seed: int = 5, weeks: int = 6) -> list[Path]:
    """A generated log of ``n`` requests cut into ``files`` JSONL files (see conftest)."""
    return _split_demo(folder, n, files, seed=seed, weeks=weeks)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return split_demo(tmp_path_factory.mktemp("store-logs"), 1200, 3)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "hmac.key"
    p.write_text(KEY)
    return p


def run(paths, out: Path, key_file: Path, **kw) -> pipeline.RunResult:
    kw.setdefault("rate", 0.3)
    kw.setdefault("report", False)
    opts = pipeline.RunOptions(out=out, classifier="keyword", key_file=key_file, **kw)
    return pipeline.run(paths, opts, console=Console(file=io.StringIO()))


def q(out: Path, sql: str, params=None):
    con = duckdb.connect(str(out / DB_NAME), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


class Counting(Classifier):
    """A backend that counts the texts it is asked to classify."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__(threshold=inner.threshold)
        self.inner = inner
        self.name, self.model_id = inner.name, inner.model_id
        self.taxonomy_version = inner.taxonomy_version
        self.texts = 0

    def predict(self, texts):
        self.texts += len(texts)
        return self.inner.predict(texts)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[Counting]:
    made: list[Counting] = []
    real = pipeline.get_classifier

    def fake(name, **kw):
        c = Counting(real(name, **kw))
        made.append(c)
        return c

    monkeypatch.setattr(pipeline, "get_classifier", fake)
    return made


def test_settings_and_weights_recorded(logs, tmp_path, key_file):
    out = tmp_path / "out"
    rates = {"deepseek/deepseek-chat-v3.1": 0.9}
    run(logs, out, key_file, rate=0.1, salt="s1", model_rates=rates)
    meta = dict(q(out, "SELECT key, value FROM meta"))
    assert meta["rate"] == "0.1" and meta["salt"] == "s1"
    assert "deepseek/deepseek-chat-v3.1" in meta["model_rates"]
    rows = q(out, "SELECT request_id, model, sampled, weight FROM requests")
    assert rows
    for rid, model, sampled, weight in rows:
        rate = rates.get(model, 0.1)
        assert sampled == (u_value(rid, "s1") < rate)
        assert weight == pytest.approx(1 / rate if sampled else 0.0)
    # every sampled request with a prompt has an assignment
    missing = q(
        out,
        """SELECT count(*) FROM requests r ANTI JOIN assignments a USING (request_id)
           WHERE r.sampled AND r.has_prompt""",
    )[0][0]
    assert missing == 0
    # another salt into the same store is refused (estimates would mix)
    with pytest.raises(ValueError, match="salt"):
        run(logs, out, key_file, rate=0.1, salt="s2", model_rates=rates)
    with pytest.raises(ValueError, match="rate"):
        run(logs, out, key_file, rate=0.2, salt="s1", model_rates=rates)


def test_metadata_only(logs, tmp_path, key_file):
    out = tmp_path / "out"
    run(logs, out, key_file)
    for table in ("requests", "labels", "assignments"):
        cols = [r[0] for r in q(out, f"DESCRIBE {table}")]
        assert "prompt_text" not in cols
    cols = pq.read_schema(next((out / "parquet" / "requests").rglob("*.parquet"))).names
    assert "prompt_text" not in cols


def parquet_hashes(out: Path) -> dict[str, str]:
    root = out / "parquet"
    return {
        f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def test_parquet_export_reproducible_without_stale_partitions(logs, tmp_path, key_file):
    a, b = tmp_path / "a", tmp_path / "b"
    run(logs, a, key_file)
    first = parquet_hashes(a)
    assert any(k.startswith("requests/week=") for k in first)
    assert {"labels.parquet", "assignments.parquet", "rejects.parquet"} <= set(first)
    # partitions are ISO weeks (Mondays), one file each, rows sorted by id
    for k in first:
        if k.startswith("requests/"):
            week = k.split("/")[1].removeprefix("week=")
            assert k.endswith("/part_0.parquet")
            import datetime as dt

            assert dt.date.fromisoformat(week).weekday() == 0
            ids = pq.read_table(a / "parquet" / k).column("request_id").to_pylist()
            assert ids == sorted(ids)
    # the export has every request once
    ds = pq.read_table(a / "parquet" / "requests")
    assert ds.num_rows == q(a, "SELECT count(*) FROM requests")[0][0]

    # stale partitions and a killed export's leftovers disappear on the next export
    stale = a / "parquet" / "requests" / "week=1999-01-04"
    stale.mkdir()
    pq.write_table(pa.table({"x": [1]}), stale / "part_0.parquet")
    (a / ".parquet.tmp").mkdir()
    (a / ".parquet.tmp" / "junk").write_text("x")
    with Store(a) as store:
        store.export_parquet()
    assert parquet_hashes(a) == first
    assert not (a / ".parquet.tmp").exists() and not (a / ".parquet.old").exists()

    # a rerun (nothing new) and a separate run into another folder: byte for byte the same
    run(logs, a, key_file)
    assert parquet_hashes(a) == first
    run(logs, b, key_file)
    assert parquet_hashes(b) == first
    assert canonical_dump(a) == canonical_dump(b)


def test_incremental_runs_classify_only_new_rows(logs, tmp_path, key_file, counting):
    out = tmp_path / "out"
    todo = "SELECT count(*) FROM requests WHERE sampled AND has_prompt"

    run(logs[:2], out, key_file, cache=False)
    assert counting[-1].texts == q(out, todo)[0][0] > 0

    # one more file: only its sampled rows are classified
    run(logs, out, key_file, cache=False)
    new = q(out, todo + " AND source_file = ?", [str(logs[2])])[0][0]
    assert new > 0
    assert counting[-1].texts == new

    # nothing new: nothing classified, nothing changed
    before = canonical_dump(out)
    run(logs, out, key_file, cache=False)
    assert counting[-1].texts == 0
    assert canonical_dump(out) == before

    # records appended to a log already read: the file is read again, old rows are skipped
    extra = split_demo(tmp_path / "more", 300, 1, seed=99)[0]
    n_before = q(out, "SELECT count(*) FROM requests")[0][0]
    done_before = q(out, todo)[0][0]
    with open(logs[0], "a", encoding="utf-8") as f:
        f.write(extra.read_text(encoding="utf-8"))
    try:
        run(logs, out, key_file, cache=False)
    finally:  # the module's logs are shared: put the file back
        text = logs[0].read_text(encoding="utf-8")
        logs[0].write_text(text[: len(text) - len(extra.read_text(encoding="utf-8"))])
    assert q(out, "SELECT count(*) FROM requests")[0][0] == n_before + 300
    assert counting[-1].texts == q(out, todo)[0][0] - done_before > 0


def test_a_batch_is_all_or_nothing(tmp_path):
    """A failure inside write_batch leaves no partial rows (the transaction rolls back)."""
    from tokencensus.schema import REQUEST_SCHEMA

    out = tmp_path / "out"
    rows = [{"request_id": f"r{i}", "prompt_text": "hi"} for i in range(3)]
    req = pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)
    req = req.append_column("sampled", pa.array([True] * 3)).append_column(
        "weight", pa.array([1.0] * 3)
    )
    bad_preds = pa.table({"request_id": ["r0"], "labels": ["not a list"]})
    with Store(out) as store:
        with pytest.raises(duckdb.Error):
            store.write_batch(req, "f", bad_preds, None)
        assert store.con.execute("SELECT count(*) FROM requests").fetchall()[0][0] == 0
        store.write_batch(req, "f")
        store.write_batch(req, "f")  # idempotent
        assert store.con.execute("SELECT count(*) FROM requests").fetchall()[0][0] == 3


def test_wal_is_folded_in(logs, tmp_path, key_file):
    out = tmp_path / "out"
    run(logs, out, key_file)
    assert not (out / (DB_NAME + ".wal")).exists()
    assert not any(p.name.startswith(".") for p in out.iterdir())
    os.sync()
