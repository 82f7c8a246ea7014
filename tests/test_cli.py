"""The command line, driven as a user would: exit codes, JSON contracts, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import require_shared
from tokencensus.cli import app

runner = CliRunner()


def test_classify_json_keyword() -> None:
    r = runner.invoke(
        app,
        [
            "classify",
            "--backend",
            "keyword",
            "--json",
            "You are {{char}}. Stay in character and roleplay with {{user}}.",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["primary_bucket"] == "Roleplay"
    assert out["labels"][0][0] == "/Games/Roleplaying Games"
    assert 0.5 <= out["labels"][0][1] <= 1


def test_unknown_backend_is_one_line_error() -> None:
    r = runner.invoke(app, ["classify", "--backend", "nope", "hello"])
    assert r.exit_code == 2
    assert "unknown classifier backend 'nope'" in r.output
    assert "Traceback" not in r.output


def test_ingest_json_on_real_openrouter_export() -> None:
    shared = require_shared()
    r = runner.invoke(app, ["ingest", "--json", str(shared / "log-samples/openrouter/sample.csv")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) == {"format", "rows", "rejects", "first", "last", "models"}
    assert out["format"] == "openrouter-csv" and out["rows"] == 68 and out["rejects"] == {}
    assert out["first"].startswith("2026-03-27") and out["last"].startswith("2026-03-28")
    assert "openai/gpt-5-nano-2025-08-07" in out["models"]


def test_run_missing_file_is_one_line_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "missing.jsonl: no such file" in r.output
    assert "Traceback" not in r.output


def test_run_then_report(tmp_path: Path, demo_log: Path) -> None:
    out = tmp_path / "census"
    r = runner.invoke(
        app, ["run", str(demo_log), "--out", str(out), "--rate", "0.05", "--backend", "keyword"]
    )
    assert r.exit_code == 0, r.output
    assert (out / "report.html").exists()
    (out / "report.html").unlink()
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "report.html").stat().st_size > 10_000
    # A second run with different sampling settings must refuse to mix estimates.
    r = runner.invoke(
        app, ["run", str(demo_log), "--out", str(out), "--rate", "0.5", "--backend", "keyword"]
    )
    assert r.exit_code == 2 and "rate=0.05" in r.output


def test_run_dry_run_prices_sampled_prompts_and_writes_nothing(
    tmp_path: Path, demo_log: Path
) -> None:
    out = tmp_path / "never"
    r = runner.invoke(
        app,
        [
            "run",
            str(demo_log),
            "--out",
            str(out),
            "--rate",
            "0.1",
            "--backend",
            "google",
            "--dry-run",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "Google classifyText dry run" in r.stdout
    n_texts = int(r.stdout.split("dry run: ")[1].split(" texts")[0].replace(",", ""))
    assert 200 < n_texts < 400  # about 10% of 3,000
    assert not out.exists()
