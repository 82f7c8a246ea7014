"""Deterministic sampling: one hash, the same ids in Python, in DuckDB SQL and in the pipeline.

(Ray Data's ``map_batches(sample_batch)`` is checked against the same ids in
``test_ray.py``, which owns the one Ray start-up of the suite.)
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokencensus import sample
from tokencensus.sample import SQL_U, parse_model_rates, sample_batch, u_value

SALT = "tokencensus-v1"


def make_ids(n: int = 20000, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    ids = [f"gen-{rng.getrandbits(64):016x}" for _ in range(n)]
    # odd ids: unicode, separators, the empty string, very long
    ids += ["", "é", "日本語-id", "a\x1fb", "x" * 5000, "  spaced  ", "0"]
    return ids


def python_pick(ids: list[str], rate: float, salt: str = SALT) -> set[str]:
    return {i for i in ids if u_value(i, salt) < rate}


def test_u_value_is_the_documented_hash():
    rid = "gen-1751262803-bfd3e8500c4a00000000"
    digest = hashlib.md5((SALT + "\x1f" + rid).encode()).hexdigest()
    assert u_value(rid, SALT) == int(digest[:13], 16) / 2**52
    # pinned: changing the hash silently would change every past sample
    assert u_value("req-1", "tokencensus-v1") == pytest.approx(
        int(hashlib.md5(b"tokencensus-v1\x1freq-1").hexdigest()[:13], 16) / 2**52, abs=0
    )


def test_u_is_uniform_in_unit_interval():
    us = [u_value(i, SALT) for i in make_ids(20000)]
    assert all(0.0 <= u < 1.0 for u in us)
    for rate in (0.01, 0.1, 0.5):
        share = sum(u < rate for u in us) / len(us)
        assert abs(share - rate) < 4 * math.sqrt(rate * (1 - rate) / len(us))


def test_salt_changes_the_sample():
    ids = make_ids(5000)
    assert python_pick(ids, 0.2, "a") != python_pick(ids, 0.2, "b")


@pytest.mark.parametrize("rate", [0.0025, 0.05, 0.5, 1.0])
def test_duckdb_sql_over_parquet_picks_the_same_ids(tmp_path: Path, rate: float):
    ids = make_ids()
    f = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"request_id": ids}), f)
    con = duckdb.connect()
    got = {
        r[0]
        for r in con.execute(
            f"SELECT request_id FROM read_parquet($path) WHERE {SQL_U} < $rate",
            {"path": str(f), "salt": SALT, "rate": rate},
        ).fetchall()
    }
    # u itself matches to the last bit
    us = dict(
        con.execute(
            f"SELECT request_id, {SQL_U} FROM read_parquet($path)", {"path": str(f), "salt": SALT}
        ).fetchall()
    )
    con.close()
    assert all(us[i] == u_value(i, SALT) for i in ids)
    assert got == python_pick(ids, rate)
    if rate == 1.0:
        assert got == set(ids)


def test_sample_batch_matches_python_and_weights():
    ids = make_ids(10000)
    rate = 0.05
    out = sample_batch(pa.table({"request_id": ids, "model": ["m"] * len(ids)}), rate, SALT)
    rows = out.to_pylist()
    assert [r["request_id"] for r in rows] == ids  # order kept, nothing dropped
    picked = {r["request_id"] for r in rows if r["sampled"]}
    assert picked == python_pick(ids, rate)
    for r in rows:
        assert r["weight"] == (1 / rate if r["sampled"] else 0.0)


def test_sample_batch_accepts_record_batches():
    b = pa.RecordBatch.from_pylist([{"request_id": "a", "model": "m"}])
    out = sample_batch(b, 1.0, SALT)
    assert out.column("sampled").to_pylist() == [True]


def test_stratified_by_model():
    ids = make_ids(20000)
    models = ["big/model" if k % 2 else "small/model" for k in range(len(ids))]
    rates = {"small/model": 0.5}
    out = sample_batch(pa.table({"request_id": ids, "model": models}), 0.02, SALT, rates)
    rows = out.to_pylist()
    for r in rows:
        rate = rates.get(r["model"], 0.02)
        assert r["sampled"] == (u_value(r["request_id"], SALT) < rate)
        assert r["weight"] == (1 / rate if r["sampled"] else 0.0)
    # Horvitz-Thompson: weighted counts estimate each stratum's size
    for m in ("big/model", "small/model"):
        n = sum(1 for r in rows if r["model"] == m)
        est = sum(r["weight"] for r in rows if r["model"] == m)
        assert abs(est - n) / n < 0.2


def test_model_rate_for_null_model_falls_back():
    t = pa.table({"request_id": ["a", "b"], "model": pa.array([None, None], pa.string())})
    out = sample_batch(t, 1.0, SALT, {"x": 0.5})
    assert out.column("weight").to_pylist() == [1.0, 1.0]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_rates_are_checked(bad: float):
    t = pa.table({"request_id": ["a"], "model": ["m"]})
    with pytest.raises(ValueError):
        sample_batch(t, bad, SALT)
    with pytest.raises(ValueError):
        sample_batch(t, 0.5, SALT, {"m": bad})


def test_parse_model_rates():
    assert parse_model_rates(None) is None
    assert parse_model_rates([]) is None
    assert parse_model_rates(["openai/gpt-4o=0.01", "x/y=1"]) == {"openai/gpt-4o": 0.01, "x/y": 1.0}
    assert parse_model_rates(["a=0.1,b=0.2"]) == {"a": 0.1, "b": 0.2}
    assert parse_model_rates(["weird=name=0.5"]) == {"weird=name": 0.5}
    for bad in (["a"], ["a=x"], ["=0.1"], ["a=0"], ["a=2"]):
        with pytest.raises(ValueError):
            parse_model_rates(bad)


def test_keep_agrees():
    for i in make_ids(500):
        assert sample.keep(i, 0.3, SALT) == (u_value(i, SALT) < 0.3)
