"""End to end: a generated log through the whole pipeline, tables checked against the input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tokencensus import pipeline, sample
from tokencensus.buckets import Rules


def _input_rows(log: Path) -> list[dict]:
    rows = []
    with gzip.open(log, "rt", encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            d = rec.get("data", {})
            if isinstance(d.get("tokens_prompt"), int):
                rows.append(
                    {
                        "id": d["id"],
                        "pt": d["tokens_prompt"],
                        "ct": d["tokens_completion"],
                        "text": rec["input"]["messages"][0]["content"],
                    }
                )
    return rows


@pytest.fixture(scope="module")
def run_out(demo_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e-out")
    pipeline.run([demo_log], pipeline.RunOptions(out=out, rate=0.2, classifier="keyword"))
    return out


def test_token_totals_equal_input(run_out: Path, demo_log: Path) -> None:
    rows = _input_rows(demo_log)
    con = duckdb.connect(str(run_out / "tokencensus.duckdb"), read_only=True)
    n, pt, ct = con.execute(
        "SELECT count(*), sum(prompt_tokens), sum(completion_tokens) FROM requests"
    ).fetchone()
    assert n == len(rows) == 3000
    assert pt == sum(r["pt"] for r in rows)
    assert ct == sum(r["ct"] for r in rows)
    # The Parquet export holds the same rows as the DuckDB table.
    table = pq.read_table(run_out / "parquet" / "requests")
    assert table.num_rows == n
    assert sum(table.column("prompt_tokens").to_pylist()) == pt


def test_every_sampled_row_is_classified(run_out: Path, demo_log: Path) -> None:
    con = duckdb.connect(str(run_out / "tokencensus.duckdb"), read_only=True)
    sampled = {
        r[0]
        for r in con.execute(
            "SELECT request_id FROM requests WHERE sampled AND has_prompt"
        ).fetchall()
    }
    classified = {r[0] for r in con.execute("SELECT request_id FROM assignments").fetchall()}
    assert sampled == classified
    expected = {
        r["id"] for r in _input_rows(demo_log) if sample.keep(r["id"], 0.2, "tokencensus-v1")
    }
    assert sampled == expected
    buckets = set(Rules.load("study").buckets)
    assert {
        r[0] for r in con.execute("SELECT DISTINCT primary_bucket FROM assignments").fetchall()
    } <= buckets
    weights = [
        r[0] for r in con.execute("SELECT DISTINCT weight FROM requests WHERE sampled").fetchall()
    ]
    assert weights == [pytest.approx(5.0)]


def test_broken_lines_are_counted_not_dropped(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    good = {
        "data": {
            "id": "gen-1",
            "created_at": "2025-01-01T00:00:00Z",
            "model": "openai/gpt-4o-mini",
            "tokens_prompt": 5,
            "tokens_completion": 7,
        }
    }
    log.write_text(
        json.dumps(good)
        + "\n"
        + '{"data": {"id": \n'
        + json.dumps(
            {
                "data": {
                    "id": "gen-2",
                    "created_at": "nope",
                    "tokens_prompt": 1,
                    "tokens_completion": 1,
                }
            }
        )
        + "\n"
    )
    out = tmp_path / "out"
    pipeline.run([log], pipeline.RunOptions(out=out, rate=1.0, classifier="keyword"))
    con = duckdb.connect(str(out / "tokencensus.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    rejects = dict(con.execute("SELECT reason, count(*) FROM rejects GROUP BY 1").fetchall())
    assert rejects == {"malformed_json": 1, "bad_timestamp": 1}
    lines = sorted(r[0] for r in con.execute("SELECT line FROM rejects").fetchall())
    assert lines == [2, 3]


def test_no_prompt_text_in_any_output(run_out: Path, demo_log: Path) -> None:
    # Distinctive 40-character snippets of every prompt must not appear in any file written.
    snippets = set()
    for r in _input_rows(demo_log):
        t = " ".join(r["text"].split())
        if len(t) >= 60:
            snippets.add(t[10:50].encode("utf-8"))
    assert len(snippets) > 500
    files = [p for p in run_out.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    for p in files:
        data = p.read_bytes()
        data = b" ".join(data.split())
        hits = [s for s in snippets if s in data]
        assert not hits, f"prompt text found in {p}"


def test_report_and_tables_written(run_out: Path) -> None:
    html = (run_out / "report.html").read_text(encoding="utf-8")
    assert "vegaEmbed" in html and "<script src=" not in html
    assert (run_out / "tables" / "weekly_bucket_share.csv").exists()
    import tokencensus

    census = tokencensus.open(run_out, min_group=1)
    share = census.bucket_share()
    assert not share["suppressed"].any()
    assert share["share"].sum() == pytest.approx(1.0)
    census.close()


def test_run_joins_openai_batch_pair(tmp_path: Path) -> None:
    from tests.conftest import require_shared

    folder = require_shared() / "log-samples" / "openai-batch"
    out = tmp_path / "out"
    pipeline.run([folder], pipeline.RunOptions(out=out, rate=1.0, classifier="keyword"))
    con = duckdb.connect(str(out / "tokencensus.duckdb"), read_only=True)
    n, with_prompt, tokens = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE has_prompt), sum(prompt_tokens) FROM requests"
    ).fetchone()
    assert n == 100 and with_prompt == 100 and tokens > 0
    assert con.execute("SELECT count(*) FROM assignments").fetchone()[0] == 100
    files = {r[0] for r in con.execute("SELECT path FROM files").fetchall()}
    assert len(files) == 2
    con.close()
    # A rerun finds both files done and changes nothing.
    pipeline.run([folder], pipeline.RunOptions(out=out, rate=1.0, classifier="keyword"))
