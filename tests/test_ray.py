"""The Ray Data path gives the same tables as the local path (Ray in local mode).

One Ray start-up for the module (it is slow); skipped where Ray is not installed.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import tokencensus  # noqa: E402
from tokencensus import pipeline  # noqa: E402
from tokencensus.sample import SQL_U, sample_batch, u_value  # noqa: E402
from tokencensus.store import DB_NAME, canonical_dump  # noqa: E402

KEY = "ray-test-key-0123456789abcdef"
SALT = "tokencensus-v1"


@pytest.fixture(scope="module")
def ray_local():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline, and nothing to report
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from tokencensus import demo

    folder = tmp_path_factory.mktemp("ray-logs")
    src = demo.generate(folder / "_gen", n_requests=1200, weeks=4, seed=21)
    with gzip.open(src, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines(True)
    per = math.ceil(len(lines) / 2)
    paths = []
    for i in range(2):
        p = folder / f"log-{i}.jsonl"
        p.write_text("".join(lines[i * per : (i + 1) * per]), encoding="utf-8")
        paths.append(p)
    # a malformed record, so both paths record the same reject
    with open(paths[1], "a", encoding="utf-8") as f:
        f.write('{"data": {"id": "broken", \n')
    return paths


def options(out: Path, key_file: Path, **kw) -> pipeline.RunOptions:
    return pipeline.RunOptions(
        out=out,
        rate=0.3,
        classifier="keyword",
        key_file=key_file,
        model_rates={"deepseek/deepseek-chat-v3.1": 0.6},
        report=kw.pop("report", False),
        **kw,
    )


def test_every_engine_picks_the_same_ids(ray_local, tmp_path):
    """DuckDB SQL over Parquet, Python's u_value, and Ray Data map_batches(sample_batch)."""
    import duckdb

    ids = [f"req-{i:06d}" for i in range(6000)] + ["é-ünïcode", "", "a\x1fb"]
    models = ["m1" if i % 3 else "m2" for i in range(len(ids))]
    f = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"request_id": ids, "model": models}), f)
    rate = 0.05

    python = {i for i in ids if u_value(i, SALT) < rate}
    con = duckdb.connect()
    sql = {
        r[0]
        for r in con.execute(
            f"SELECT request_id FROM read_parquet($p) WHERE {SQL_U} < $rate",
            {"p": str(f), "salt": SALT, "rate": rate},
        ).fetchall()
    }
    con.close()
    ds = ray.data.read_parquet(str(f)).map_batches(
        sample_batch,
        batch_format="pyarrow",
        batch_size=1000,
        fn_kwargs={"rate": rate, "salt": SALT},
    )
    rows = ds.take_all()
    by_ray = {r["request_id"] for r in rows if r["sampled"]}
    assert len(rows) == len(ids)
    assert python == sql == by_ray
    assert all(r["weight"] == (1 / rate if r["sampled"] else 0.0) for r in rows)

    # stratified by model: the same in Ray as in one process
    strata = {"m2": 0.5}
    local = sample_batch(pa.table({"request_id": ids, "model": models}), rate, SALT, strata)
    ray_rows = (
        ray.data.read_parquet(str(f))
        .map_batches(
            sample_batch,
            batch_format="pyarrow",
            batch_size=700,
            fn_kwargs={"rate": rate, "salt": SALT, "model_rates": strata},
        )
        .take_all()
    )
    want = {r["request_id"]: (r["sampled"], r["weight"]) for r in local.to_pylist()}
    assert {r["request_id"]: (r["sampled"], r["weight"]) for r in ray_rows} == want


def test_ray_path_gives_the_local_tables(ray_local, logs, tmp_path):
    from tokencensus.distributed import run_ray

    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY)
    local, dist = tmp_path / "local", tmp_path / "ray"
    console = Console(file=io.StringIO())
    pipeline.run(logs, options(local, key_file), console=console)
    result = run_ray(logs, options(dist, key_file, report=True), console=console, concurrency=1)
    assert result.summary["classified"] > 0

    a, b = canonical_dump(local), canonical_dump(dist)
    assert a["requests"] and a["assignments"] and a["labels"] and a["rejects"]
    diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
    assert not diff, diff
    assert not (dist / "_ray").exists()  # staging removed once loaded

    # tokencensus.open works on the result
    census = tokencensus.open(dist)
    try:
        assert census.summary()["requests"] == len(a["requests"])
    finally:
        census.close()
    assert (dist / "report.html").exists() and (dist / DB_NAME).exists()

    # a rerun skips the files already ingested and changes nothing
    run_ray(logs, options(dist, key_file), console=console, concurrency=1)
    assert canonical_dump(dist) == b


def test_canonical_parquet_read_by_ray(ray_local, logs, tmp_path):
    """A Parquet log already in the request schema is read with ray.data.read_parquet
    and still gives the local path's tables."""
    from tokencensus import ingest
    from tokencensus.distributed import run_ray

    table = pa.Table.from_batches(list(ingest.read([logs[0]])))
    src = tmp_path / "canonical.parquet"
    pq.write_table(table, src, row_group_size=200)
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY)
    local, dist = tmp_path / "local", tmp_path / "ray"
    console = Console(file=io.StringIO())
    pipeline.run([src], options(local, key_file), console=console)
    run_ray([src], options(dist, key_file), console=console, concurrency=1)
    a, b = canonical_dump(local), canonical_dump(dist)
    assert a["requests"] and a["assignments"]
    diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
    assert not diff, diff


def test_ray_run_leaves_no_canary(ray_local, logs, tmp_path):
    """The Ray path writes no prompt text nor raw user id either (its staging included)."""
    import json
    import random

    from tests.test_privacy import Canaries, new_canary, scan
    from tokencensus.distributed import run_ray

    rng = random.Random(7)
    can = Canaries()
    lines = []
    shared = can.add(new_canary(rng))  # one user with many requests
    for k, line in enumerate(logs[0].read_text(encoding="utf-8").splitlines()[:300]):
        rec = json.loads(line)
        rec["input"]["messages"][-1]["content"] += " " + can.add(new_canary(rng))
        rec["data"]["external_user"] = can.add(new_canary(rng)) if k % 2 else shared
        lines.append(json.dumps(rec))
    src = tmp_path / "canary.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY)
    out = tmp_path / "out"
    opts = options(out, key_file, report=True)
    opts.rate = 1.0
    opts.model_rates = None
    run_ray([src], opts, console=Console(file=io.StringIO()), concurrency=1, keep_staging=True)
    assert (out / "_ray" / "requests").exists()
    assert scan(can, [out]) == {}
