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


def test_eval_json_with_google_backend_against_local_server(tmp_path: Path, monkeypatch) -> None:
    """`tokencensus eval --backend google` gives the agreement table for any backend."""
    from tests.fakes import start_google_server

    labels = tmp_path / "labels.jsonl"
    rows = [
        (
            "a",
            "Write a python function that parses ISO dates and returns a datetime object, with unit "
            "tests for time zones, leap years, invalid input and daylight saving transitions.",
            "Programming",
        ),
        (
            "b",
            "You are Aria, a tavern keeper in a fantasy world of dragons and knights. Stay in character, "
            "describe your actions between asterisks and never speak for the user.",
            "Roleplay",
        ),
        (
            "c",
            "What is the capital city of Australia, and why was it chosen over Sydney and Melbourne "
            "when the country federated at the start of the twentieth century?",
            "General Q&A/Knowledge",
        ),
    ]
    labels.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "text": t,
                    "categories": [],
                    "buckets": [b],
                    "primary": b,
                    "language": "en",
                }
            )
            + "\n"
            for i, t, b in rows
        )
    )
    with start_google_server(api_key="test-key") as server:
        monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
        monkeypatch.setenv("TOKENCENSUS_GOOGLE_BASE_URL", server.base_url)
        r = runner.invoke(app, ["eval", str(labels), "--backend", "google", "--json"])
        assert r.exit_code == 0, r.output
        assert len(server.api_requests("classifyText")) == 3
    out = json.loads(r.stdout)
    assert set(out) == {
        "primary_accuracy",
        "per_bucket",
        "macro_f1",
        "share_error_pp",
        "ece",
        "prompts_per_second",
    }
    assert 0.0 <= out["primary_accuracy"] <= 1.0
    assert out["per_bucket"]["Roleplay"]["support"] == 1
