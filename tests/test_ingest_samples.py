"""Every real sample file in /work/shared/log-samples through its reader."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokencensus.ingest import IngestReport, detect, read

SAMPLES = Path("/work/shared/log-samples")
OPENROUTER_CSV = SAMPLES / "openrouter" / "sample.csv"
BATCH_IN = SAMPLES / "openai-batch" / "batchinput.jsonl"
BATCH_OUT = SAMPLES / "openai-batch" / "batch_output.jsonl"

pytestmark = pytest.mark.skipif(not SAMPLES.exists(), reason="shared log samples not mounted")


def rows_of(paths, **kw):
    report = IngestReport()
    rows = [r for b in read(paths, report=report, **kw) for r in b.to_pylist()]
    return rows, report


def test_every_sample_file_is_detected():
    for f in sorted(SAMPLES.rglob("*")):
        if f.is_file() and f.suffix in (".csv", ".jsonl"):
            assert detect(f).name in ("openrouter-csv", "openai-batch"), f


def test_openrouter_activity_csv():
    rows, report = rows_of([OPENROUTER_CSV])
    assert report.format == "openrouter-csv"
    assert report.rows == len(rows) == 68
    assert report.total_rejects == 0
    r0 = rows[0]
    assert r0["request_id"] == "gen-1774717534-RBv1klIJCCZ14FwKKGbf"
    assert r0["created_at"] == datetime(2026, 3, 28, 17, 5, 34, 844000, tzinfo=UTC)
    assert r0["model"] == "openai/gpt-5-nano-2025-08-07"
    assert r0["provider"] == "OpenAI"
    assert (r0["prompt_tokens"], r0["completion_tokens"]) == (66626, 9)
    assert r0["cost_usd"] == pytest.approx(0.003334)
    assert r0["app"] == "OpenClaw" and r0["user_key"] == "rpi5"
    assert r0["finish_reason"] == "stop"
    assert all(r["prompt_text"] is None for r in rows)  # no prompts in this export
    r2 = rows[2]  # reasoning + cached tokens present
    assert (r2["reasoning_tokens"], r2["cached_tokens"]) == (3008, 66176)
    assert r2["finish_reason"] == "length"
    j = report.to_json()
    assert set(j) == {"format", "rows", "rejects", "first", "last", "models"}
    assert j["first"].startswith("2026-03-27") and j["last"].startswith("2026-03-28")
    assert "anthropic/claude-4.6-opus-20260205" in j["models"]


def _lines(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def test_openai_batch_pair_join():
    rows, report = rows_of([BATCH_OUT.parent])  # the directory: both files, paired
    assert report.format == "openai-batch"
    assert report.rows == len(rows) == 100
    assert report.total_rejects == 0 and not report.skipped
    outs = {o["custom_id"]: o for o in _lines(BATCH_OUT)}
    ins = {i["custom_id"]: i for i in _lines(BATCH_IN)}
    assert {r["request_id"] for r in rows} == set(outs) == set(ins)
    for r in rows:
        body = outs[r["request_id"]]["response"]["body"]
        assert r["prompt_tokens"] == body["usage"]["prompt_tokens"]  # tokens from the output
        assert r["completion_tokens"] == body["usage"]["completion_tokens"]
        assert r["reasoning_tokens"] == 0 and r["cached_tokens"] == 0
        assert r["model"] == "gpt-4o-mini-2024-07-18"
        assert r["created_at"] == datetime.fromtimestamp(body["created"], tz=UTC)
        assert r["finish_reason"] == body["choices"][0]["finish_reason"]
        msgs = ins[r["request_id"]]["body"]["messages"]  # the prompt from the input
        assert r["prompt_text"] == "\n".join(m["content"] for m in msgs)
        assert r["prompt_text"].startswith("You are a helpful assistant that analyzes")


def test_openai_batch_pair_given_as_two_paths_in_any_order():
    rows, report = rows_of([BATCH_IN, BATCH_OUT], format="openai-batch")
    assert report.rows == 100 and all(r["prompt_text"] for r in rows)


def test_openai_batch_output_alone_and_input_alone():
    rows, report = rows_of([BATCH_OUT])
    assert report.rows == 100 and all(r["prompt_text"] is None for r in rows)
    assert all(r["prompt_tokens"] for r in rows)
    rows, report = rows_of([BATCH_IN])
    assert report.rows == 100
    assert all(r["prompt_text"] and r["model"] == "gpt-4o-mini" for r in rows)
    assert all(r["prompt_tokens"] is None for r in rows)


def test_batch_input_without_output_is_counted(tmp_path):
    lines = BATCH_OUT.read_text().splitlines()
    (tmp_path / "out.jsonl").write_text("\n".join(lines[:60]) + "\n")
    (tmp_path / "in.jsonl").write_bytes(BATCH_IN.read_bytes())
    rows, report = rows_of([tmp_path])
    assert report.rows == 60 and all(r["prompt_text"] for r in rows)
    assert report.skipped["batch_input_without_output"] == 40


def test_openrouter_csv_duckdb_path_agrees(monkeypatch):
    import tokencensus.ingest.generic as generic

    slow, _ = rows_of([OPENROUTER_CSV])
    monkeypatch.setattr(generic, "DUCKDB_MIN_BYTES", 0)  # the fast path, even for 13 KB
    fast, report = rows_of([OPENROUTER_CSV])
    assert fast == slow and report.rows == 68


def test_openrouter_csv_duckdb_falls_back_at_a_bad_row(tmp_path, monkeypatch):
    import tokencensus.ingest.generic as generic

    lines = OPENROUTER_CSV.read_bytes().splitlines(keepends=True)
    lines.insert(40, b"gen-bad,2026-03-28 17:05:34.844,x,,,,0,oops\n")
    (tmp_path / "a.csv").write_bytes(b"".join(lines))
    monkeypatch.setattr(generic, "DUCKDB_MIN_BYTES", 0)
    rows, report = rows_of([tmp_path / "a.csv"])
    assert report.rows == 68 and len({r["request_id"] for r in rows}) == 68
    assert report.rejects == {"short_row": 1} and report.reject_rows[0]["line"] == 41


def test_units_keep_batch_pairs_together():
    from tokencensus.ingest import units

    got = units([SAMPLES])
    assert [BATCH_OUT, BATCH_IN] in got
    assert [OPENROUTER_CSV] in got
    rows, report = rows_of([BATCH_OUT, BATCH_IN])  # one read() per unit: the join holds
    assert report.rows == 100 and all(r["prompt_text"] for r in rows)
