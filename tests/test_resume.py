"""A run killed at any point (SIGKILL or Ctrl-C) resumes and ends identical to one never stopped.

Runs the pipeline in-process in child processes (a fork server that has the
modules imported already, so a child starts in milliseconds), kills each after
a random delay with SIGKILL or SIGINT, reruns, and finally compares a
canonical dump of every table and of the Parquet export with an uninterrupted
run's. The random delays span a whole run, so kills land in ingest, in a
batch's transaction, in the classification cache, in the Parquet export and
in the report.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import split_demo as _split_demo
from tokencensus.store import DB_NAME, canonical_dump

ROWS = 1500
FILES = 3
MIN_KILLS = 20
KEY = "resume-test-key-0123456789abcdef"

PRELOAD = [
    "duckdb",
    "pyarrow.parquet",
    "pandas",
    "altair",
    "vl_convert",
    "tokencensus.pipeline",
    "tokencensus.analyse",
    "tokencensus.report",
    "tokencensus.catalog",
    "tokencensus.classify.keyword",
    "tokencensus.classify.cache",
    "tokencensus.ingest.generic",
    "tokencensus.ingest.openrouter",
]


def split_demo(folder: Path, n: int, files: int, seed: int = 3, weeks: int = 6) -> list[Path]:
    """A generated log of ``n`` requests cut into ``files`` JSONL files (see conftest)."""
    return _split_demo(folder, n, files, seed=seed, weeks=weeks)


def options(out: Path, key_file: Path, report: bool = True):
    from tokencensus.pipeline import RunOptions

    return RunOptions(
        out=out, rate=0.3, classifier="keyword", key_file=key_file, batch_rows=200, report=report
    )


def child_run(paths: list[Path], out: Path, key_file: Path, err: Path, report: bool) -> None:
    """The whole pipeline in a child: exit 0 done, 130 on Ctrl-C, 3 on anything else."""
    from rich.console import Console

    from tokencensus import pipeline

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        pipeline.run(paths, options(out, key_file, report), console=Console(file=io.StringIO()))
    except KeyboardInterrupt:
        os._exit(130)
    except BaseException:
        err.write_text(traceback.format_exc())
        os._exit(3)
    os._exit(0)


#: Analysis tables whose bootstrap intervals depend on the order DuckDB returns the
#: classified rows in (``Census.BUCKET_ROWS`` has no ORDER BY), which differs between
#: two stores with the same rows laid out differently (as after a resumed run). Left
#: out until that query is ordered; every other table must match.
ROW_ORDER_DEPENDENT: set[str] = set()


def tables_dump(out: Path) -> dict:
    """The analysis tables (CSV), numbers to 9 significant digits: DuckDB's parallel
    sums differ in the last bits from one run to the next, even on the same store."""
    dump = {}
    for f in sorted((out / "tables").glob("*.csv")):
        if f.name in ROW_ORDER_DEPENDENT:
            continue
        df = pd.read_csv(f)
        dump[f.name] = sorted(
            [f"{v:.9g}" if isinstance(v, float) else str(v) for v in row]
            for row in df.itertuples(index=False)
        )
    return dump


def full_dump(out: Path) -> dict:
    dump = canonical_dump(out)
    dump["tables"] = tables_dump(out)
    dump["report"] = (out / "report.html").exists()
    return dump


def leftovers(out: Path) -> list[str]:
    names = [".parquet.tmp", ".parquet.old", ".report.html.tmp", DB_NAME + ".wal"]
    return [n for n in names if (out / n).exists()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("resume")
    logs = split_demo(base / "logs", ROWS, FILES)
    # a malformed record, so rejects are written (and forgotten and rewritten) too
    with open(logs[1], "a", encoding="utf-8") as f:
        f.write('{"data": {"id": "cut-short", "created_at": \n')
    key_file = base / "hmac.key"
    key_file.write_text(KEY)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return base, logs, key_file, ctx


def start(ctx, logs, out, key_file, err, report=True):
    p = ctx.Process(target=child_run, args=(logs, out, key_file, err, report))
    p.start()
    return p


def reference(ctx, logs, out, key_file, err, report):
    t0 = time.monotonic()
    p = start(ctx, logs, out, key_file, err, report)
    p.join(60)
    assert p.exitcode == 0, err.read_text() if err.exists() else p.exitcode
    return time.monotonic() - t0


def test_killed_runs_resume_identically(setup):
    """At least 20 kills (SIGKILL and SIGINT, at random points, several in a row on one
    folder) and every folder ends identical to the uninterrupted run's. The first round
    writes the report too, so kills land in the analysis tables and the HTML; the
    others stop after the Parquet export, so more kills land in ingest."""
    base, logs, key_file, ctx = setup
    t_start = time.monotonic()
    err = base / "child-error.txt"

    ref = base / "reference"
    durations = {True: reference(ctx, logs, ref, key_file, err, True)}
    expected = full_dump(ref)
    assert expected["requests"] and expected["assignments"] and expected["labels"]
    assert expected["rejects"]
    assert expected["report"] and expected["tables"]
    assert leftovers(ref) == []
    store_keys = [k for k in expected if k not in ("tables", "report")]
    durations[False] = reference(ctx, logs, base / "reference-no-report", key_file, err, False)

    rng = random.Random(20240425)
    kills = {"SIGKILL": 0, "SIGINT": 0}
    rounds = 0
    while sum(kills.values()) < MIN_KILLS:
        rounds += 1
        report = rounds == 1
        out = base / f"run-{rounds}"
        for _ in range(8):  # kill up to 8 times in a row on the same folder
            p = start(ctx, logs, out, key_file, err, report)
            p.join(rng.uniform(0.0, durations[report] * 1.05))
            if p.exitcode is not None:  # finished before the kill
                assert p.exitcode == 0, err.read_text() if err.exists() else p.exitcode
                break
            sig = rng.choice([signal.SIGKILL, signal.SIGINT])
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                # Gone (and reaped elsewhere) between the check and the kill: the resumed run
                # below still has to end identical, which is what this test proves.
                break
            p.join(60)
            if sig == signal.SIGINT:
                # Ctrl-C: a clean KeyboardInterrupt (130), done if it raced the end, or
                # 1 when it came before the child reached the pipeline (multiprocessing's
                # own start-up); any other error is written to ``err`` (exit 3).
                assert p.exitcode in (130, 0, 1), err.read_text() if err.exists() else p.exitcode
            else:
                assert p.exitcode in (-signal.SIGKILL, 0)
            if p.exitcode != 0:
                kills[sig.name] += 1
        # resume to the end, uninterrupted
        p = start(ctx, logs, out, key_file, err, report)
        p.join(60)
        assert p.exitcode == 0, err.read_text() if err.exists() else p.exitcode
        got = full_dump(out)
        keys = list(expected) if report else store_keys
        diff = [k for k in keys if expected.get(k) != got.get(k)]
        diff += [k for k in got if k not in expected]
        detail = {k: "differs" for k in diff}
        if "tables" in diff:
            want, have = expected["tables"], got["tables"]
            detail["tables"] = {
                name: (
                    [r for r in have.get(name, []) if r not in want.get(name, [])][:2],
                    [r for r in want.get(name, []) if r not in have.get(name, [])][:2],
                )
                for name in set(want) | set(have)
                if want.get(name) != have.get(name)
            }
        assert not diff, f"round {rounds}: {detail} differ after kills {kills}"
        assert leftovers(out) == []
    elapsed = time.monotonic() - t_start
    print(
        f"\n{sum(kills.values())} kills {kills} in {rounds} rounds, {elapsed:.1f}s "
        f"(an uninterrupted run: {durations[True]:.1f}s, {durations[False]:.1f}s without report)"
    )
    assert kills["SIGKILL"] and kills["SIGINT"]


def test_ctrl_c_prints_one_line(setup, tmp_path):
    """`tokencensus run` interrupted by Ctrl-C says so in one line, with no traceback,
    and the rerun (same command) ends as if never interrupted."""
    base, logs, key_file, ctx = setup
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "tokencensus.cli",
        "run",
        *map(str, logs),
        "--out",
        str(out),
        "--rate",
        "0.3",
        "--backend",
        "keyword",
        "--key-file",
        str(key_file),
    ]
    env = {**os.environ, "COLUMNS": "120"}
    # A shell's background jobs (CI) inherit SIGINT ignored; a terminal's Ctrl-C is not.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 30
    while not (out / DB_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    text = (stdout + stderr).decode("utf-8", "replace")
    if proc.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    lines = [ln for ln in text.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and "rerun" in lines[0], text
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    # The CLI reads whole batches (no batch_rows) and still ends in the same state.
    ref = base / "reference"
    if not ref.exists():
        pytest.skip("needs the reference run of test_killed_runs_resume_identically")
    assert canonical_dump(out) == canonical_dump(ref)


def test_damaged_cache_is_set_aside(setup, tmp_path):
    """A classification cache that is not a database any more does not stop a run."""
    from rich.console import Console

    from tokencensus import pipeline

    base, logs, key_file, ctx = setup
    out = tmp_path / "out"
    cache = out / "cache" / "classifications.sqlite"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not a SQLite file" * 100)
    pipeline.run(logs[:1], options(out, key_file, False), console=Console(file=io.StringIO()))
    assert (out / "cache" / "classifications.sqlite.damaged").exists()
    assert cache.read_bytes().startswith(b"SQLite format 3")
