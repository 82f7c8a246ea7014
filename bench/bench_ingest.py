"""Ingest throughput per format, on this machine.

    python bench/bench_ingest.py            # generate inputs in a temp dir, print the table
    python bench/bench_ingest.py --big      # also stream a >= 5 GB JSONL file, report peak RSS
    python bench/bench_ingest.py --json     # one JSON object instead of the table

Inputs are generated (synthetic, deterministic) into a temporary directory that is removed
afterwards; ``--big`` writes its file to /tmp and deletes it. Each format is read through
:func:`tokencensus.ingest.read` exactly as ``tokencensus ingest`` reads it (detection,
conversion to the canonical schema, report), and every batch is consumed.
Targets: >= 200 MB/s of JSONL (with prompts) into the canonical schema, >= 20 M rows/s of
Parquet metadata columns.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = (
    "the quick brown fox jumps over a lazy dog please write summarise translate explain "
    "python code email customer refund policy data table query error stack trace function "
    "recipe travel plan weather contract clause marketing copy poem story essay bug fix"
).split()
MODELS = [
    "openai/gpt-4o-mini",
    "anthropic/claude-sonnet-4",
    "google/gemini-2.5-flash",
    "meta-llama/llama-3.3-70b",
    "deepseek/deepseek-r1",
]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))


def gen_jsonl(path: Path, target_mb: int, seed: int = 1) -> int:
    """Generic JSONL request log with chat messages (system + user, ~1 KB a line)."""
    rng = random.Random(seed)
    lines = []
    for i in range(20000):
        rec = {
            "request_id": f"req-{seed}-{i:08d}",
            "created_at": f"2026-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.{i % 1000:03d}Z",
            "model": rng.choice(MODELS),
            "provider": "openrouter",
            "prompt_tokens": rng.randint(10, 50000),
            "completion_tokens": rng.randint(1, 4000),
            "cost_usd": round(rng.random() / 100, 6),
            "user": f"user-{rng.randint(1, 500)}",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": _text(rng, 20, 260)},
            ],
        }
        lines.append(orjson.dumps(rec))
    chunk = b"\n".join(lines) + b"\n"
    written = 0
    with open(path, "wb") as f:
        while written < target_mb * 1_000_000:
            f.write(chunk)
            written += len(chunk)
    return written


def gen_parquet(path: Path, rows: int) -> int:
    rng = np.random.default_rng(1)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    table = pa.table(
        {
            "request_id": pa.array(np.char.add("r", np.arange(rows).astype(str)).astype(object)),
            "created_at": pa.array(
                start + rng.integers(0, 86400 * 90 * 10**6, rows).astype("timedelta64[us]"),
                pa.timestamp("us", tz="UTC"),
            ),
            "model": pa.array(
                np.array(MODELS, dtype=object)[rng.integers(0, len(MODELS), rows)]
            ).dictionary_encode(),
            "prompt_tokens": rng.integers(0, 50000, rows),
            "completion_tokens": rng.integers(0, 4000, rows),
            "cost_usd": rng.random(rows) / 100,
        }
    )
    pq.write_table(table, path, row_group_size=1 << 20)
    return rows


def gen_activity_csv(path: Path, rows: int) -> int:
    rng = random.Random(2)
    header = (
        "generation_id,created_at,cost_total,tokens_prompt,tokens_completion,"
        "tokens_reasoning,tokens_cached,model_permaslug,provider_name,variant,"
        "finish_reason_normalized,app_name,api_key_name\n"
    )
    with open(path, "w") as f:
        f.write(header)
        for i in range(rows):
            f.write(
                f"gen-{i},2026-03-28 17:05:{i % 60:02d}.844,{rng.random() / 100:.6f},"
                f"{rng.randint(1, 90000)},{rng.randint(1, 4000)},0,0,{rng.choice(MODELS)},"
                f"OpenAI,standard,stop,App,key\n"
            )
    return rows


def gen_langfuse(path: Path, rows: int) -> int:
    rng = random.Random(3)
    with open(path, "wb") as f:
        for i in range(rows):
            f.write(
                orjson.dumps(
                    {
                        "id": f"obs-{i}",
                        "traceId": f"tr-{i // 3}",
                        "type": "GENERATION",
                        "startTime": "2026-05-01T10:00:00.000Z",
                        "model": rng.choice(MODELS),
                        "input": [{"role": "user", "content": _text(rng, 20, 200)}],
                        "usageDetails": {"input": 100, "output": 20},
                        "costDetails": {"total": 0.001},
                    }
                )
                + b"\n"
            )
    return rows


def gen_batch_pair(d: Path, rows: int) -> int:
    rng = random.Random(4)
    with open(d / "batchinput.jsonl", "wb") as fi, open(d / "batch_output.jsonl", "wb") as fo:
        for i in range(rows):
            fi.write(
                orjson.dumps(
                    {
                        "custom_id": f"c{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": "gpt-4o-mini",
                            "messages": [
                                {"role": "system", "content": "Classify."},
                                {"role": "user", "content": _text(rng, 20, 200)},
                            ],
                        },
                    }
                )
                + b"\n"
            )
        for i in rng.sample(range(rows), rows):
            fo.write(
                orjson.dumps(
                    {
                        "id": f"batch_req_{i}",
                        "custom_id": f"c{i}",
                        "response": {
                            "status_code": 200,
                            "request_id": "x",
                            "body": {
                                "id": f"chatcmpl-{i}",
                                "object": "chat.completion",
                                "created": 1752593576,
                                "model": "gpt-4o-mini-2024-07-18",
                                "choices": [
                                    {
                                        "index": 0,
                                        "message": {"role": "assistant", "content": "ok"},
                                        "finish_reason": "stop",
                                    }
                                ],
                                "usage": {"prompt_tokens": 100, "completion_tokens": 5},
                            },
                        },
                        "error": None,
                    }
                )
                + b"\n"
            )
    return rows


def gen_sharegpt(path: Path, rows: int) -> int:
    rng = random.Random(5)
    with open(path, "wb") as f:
        f.write(b"[\n")
        for i in range(rows):
            conv = {
                "id": f"sg-{i}",
                "conversations": [
                    {"from": "human", "value": _text(rng, 20, 200)},
                    {"from": "gpt", "value": _text(rng, 20, 200)},
                ],
            }
            f.write((b",\n" if i else b"") + orjson.dumps(conv))
        f.write(b"\n]\n")
    return rows


def measure(paths, fmt=None) -> tuple[float, int, dict]:
    from tokencensus.ingest import IngestReport, read

    report = IngestReport()
    t = time.perf_counter()
    rows = 0
    for batch in read([str(p) for p in paths], format=fmt, report=report):
        rows += batch.num_rows
    return time.perf_counter() - t, rows, report.to_json()


def size_mb(paths) -> float:
    total = 0
    for p in paths:
        p = Path(p)
        total += sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size
    return total / 1e6


def run_small(tmp: Path, jsonl_mb: int, parquet_rows: int) -> list[dict]:
    results = []

    def add(name, paths, fmt=None, target=""):
        secs, rows, rep = measure(paths, fmt)
        mb = size_mb(paths)
        results.append(
            {
                "format": name,
                "detected": rep["format"],
                "input_mb": round(mb, 1),
                "rows": rows,
                "seconds": round(secs, 3),
                "mb_per_s": round(mb / secs, 1),
                "rows_per_s": round(rows / secs),
                "rejects": sum(rep["rejects"].values()),
                "target": target,
            }
        )

    gen_jsonl(tmp / "log.jsonl", jsonl_mb)
    add("jsonl (prompts)", [tmp / "log.jsonl"], target=">= 200 MB/s")
    gen_parquet(tmp / "meta.parquet", parquet_rows)
    add("parquet (metadata)", [tmp / "meta.parquet"], target=">= 20 M rows/s")
    # reference: pyarrow alone decoding the same file (no conversion), same machine
    t = time.perf_counter()
    n = sum(b.num_rows for b in pq.ParquetFile(tmp / "meta.parquet").iter_batches(1 << 20))
    secs = time.perf_counter() - t
    mb = size_mb([tmp / "meta.parquet"])
    results.append(
        {
            "format": "  (pyarrow decode only)",
            "detected": "-",
            "input_mb": round(mb, 1),
            "rows": n,
            "seconds": round(secs, 3),
            "mb_per_s": round(mb / secs, 1),
            "rows_per_s": round(n / secs),
            "rejects": 0,
            "target": "reference",
        }
    )
    gen_activity_csv(tmp / "activity.csv", 300_000)
    add("openrouter-csv", [tmp / "activity.csv"])
    gen_langfuse(tmp / "obs.jsonl", 100_000)
    add("langfuse (jsonl)", [tmp / "obs.jsonl"])
    (tmp / "batch").mkdir()
    gen_batch_pair(tmp / "batch", 100_000)
    add("openai-batch (pair join)", [tmp / "batch"])
    gen_sharegpt(tmp / "sharegpt.json", 100_000)
    add("sharegpt (JSON array)", [tmp / "sharegpt.json"])
    return results


def stream_child(path: str) -> None:
    """Run in a fresh process: stream one file, print rows, seconds and peak RSS."""
    secs, rows, rep = measure([path])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_kb = 0
    try:  # the kernel's high-water mark of this process image (not inherited over exec)
        with open("/proc/self/status") as f:
            hwm_kb = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": secs,
                "peak_rss_mb": peak_kb / 1024,
                "vm_hwm_mb": hwm_kb / 1024,
                "format": rep["format"],
                "rejects": rep["rejects"],
            }
        )
    )


def run_big(gb: float) -> dict:
    fd, name = tempfile.mkstemp(prefix="tokencensus-big-", suffix=".jsonl", dir="/tmp")
    os.close(fd)
    path = Path(name)
    try:
        t = time.perf_counter()
        written = gen_jsonl(path, int(gb * 1000))
        gen_secs = time.perf_counter() - t
        out = subprocess.run(
            [sys.executable, __file__, "--_stream", str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res.update(
            {
                "input_gb": round(written / 1e9, 2),
                "generate_seconds": round(gen_secs, 1),
                "mb_per_s": round(written / 1e6 / res["seconds"], 1),
            }
        )
        return res
    finally:
        path.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big", action="store_true", help="also stream a >= 5 GB JSONL file")
    ap.add_argument("--big-gb", type=float, default=5.2)
    ap.add_argument("--jsonl-mb", type=int, default=500)
    ap.add_argument("--parquet-rows", type=int, default=50_000_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_stream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._stream:
        stream_child(args._stream)
        return
    # --big first: getrusage's ru_maxrss survives fork+exec, so the child must be forked
    # before this process has grown (the small benchmarks build large inputs in memory).
    big = run_big(args.big_gb) if args.big else None
    tmp = Path(tempfile.mkdtemp(prefix="tokencensus-bench-"))
    try:
        results = run_small(tmp, args.jsonl_mb, args.parquet_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "results": results, "big": big}, indent=1))
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"tokencensus ingest benchmark ({os.cpu_count()} CPUs, load average {load:.1f})")
    hdr = f"{'format':<26}{'MB':>8}{'rows':>12}{'s':>8}{'MB/s':>9}{'rows/s':>13}  target"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print(
            f"{r['format']:<26}{r['input_mb']:>8.1f}{r['rows']:>12,}{r['seconds']:>8.2f}"
            f"{r['mb_per_s']:>9.1f}{r['rows_per_s']:>13,}  {r['target']}"
        )
    if big:
        print(
            f"\n--big: {big['input_gb']} GB JSONL, {big['rows']:,} rows in {big['seconds']:.1f} s "
            f"({big['mb_per_s']} MB/s), peak RSS {big['peak_rss_mb']:.0f} MB (getrusage; "
            f"VmHWM {big['vm_hwm_mb']:.0f} MB)"
        )


if __name__ == "__main__":
    main()
