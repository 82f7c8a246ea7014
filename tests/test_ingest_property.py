"""Property: mutated records never raise anything but IngestError (under --strict), and every
record is accounted for - a row, a counted reject, or a counted skip."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokencensus.ingest import IngestError, IngestReport, read

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)

MSGS = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": [{"type": "text", "text": "u"}]},
]
BASES: dict[str, dict] = {
    "jsonl": {
        "request_id": "r",
        "created_at": "2026-01-01T00:00:00Z",
        "model": "m",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "cost": 0.1,
        "user": "u",
        "tool_calls": [],
        "messages": MSGS,
    },
    "openrouter-json": {
        "data": {
            "id": "gen-1",
            "created_at": "2026-01-01T00:00:00Z",
            "model": "m",
            "tokens_prompt": 1,
            "tokens_completion": 2,
            "total_cost": 0.1,
        },
        "input": {"messages": MSGS},
    },
    "litellm": {
        "request_id": "r",
        "call_type": "acompletion",
        "spend": 0.1,
        "startTime": "2026-01-01T00:00:00",
        "model": "m",
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "end_user": "e",
        "metadata": {"usage_object": {"completion_tokens_details": {"reasoning_tokens": 1}}},
        "messages": MSGS,
    },
    "langfuse": {
        "id": "o",
        "traceId": "t",
        "type": "GENERATION",
        "startTime": "2026-01-01T00:00:00Z",
        "model": "m",
        "input": MSGS,
        "usageDetails": {"input": 1, "output": 2},
        "costDetails": {"total": 0.1},
    },
    "openai-chat": {
        "request": {"model": "m", "messages": MSGS},
        "response": {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1752593576,
            "model": "m",
            "choices": [{"finish_reason": "stop", "message": {"content": "x"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        },
    },
    "sharegpt": {
        "id": "c",
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
    },
    "lmsys": {
        "conversation_id": "c",
        "model": "m",
        "language": "English",
        "conversation": [{"role": "user", "content": "hi"}],
    },
    "wildchat": {
        "conversation_hash": "c",
        "model": "m",
        "timestamp": "2023-01-01T00:00:00",
        "conversation": [{"role": "user", "content": "hi"}],
        "hashed_ip": "h",
    },
}


def _paths(rec: dict) -> list[tuple[str, ...]]:
    out = []
    for k, v in rec.items():
        out.append((k,))
        if isinstance(v, dict):
            out.extend((k, *p) for p in _paths(v))
    return out


@st.composite
def mutated(draw, base: dict):
    """A base record with some fields replaced, deleted or the whole line garbled."""
    kind = draw(st.sampled_from(["keep", "replace", "delete", "garble", "raw"]))
    rec = json.loads(json.dumps(base))
    if kind == "keep":
        return rec
    if kind == "raw":
        return draw(
            st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
        )
    if kind == "garble":
        s = json.dumps(rec).encode()
        i = draw(st.integers(0, len(s)))
        return s[:i] + draw(st.sampled_from([b"", b"\xff", b"}", b'"', b"\xc3"]))
    for _ in range(draw(st.integers(1, 3))):
        if not _paths(rec):
            break
        path = draw(st.sampled_from(_paths(rec)))
        parent = rec
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return rec


def _write_jsonl(p: Path, recs) -> int:
    """Write records; return how many non-blank lines (records) the file has."""
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in recs]
    p.write_bytes(b"\n".join(lines) + b"\n")
    return sum(1 for line in lines if line.strip())


def _check(paths, fmt, n_records, file_filter=None):
    report = IngestReport()
    rows = sum(b.num_rows for b in read(paths, format=fmt, report=report))
    if n_records is None:
        n_records = rows + len(report.reject_rows) + sum(report.skipped.values())
    rejects = [r for r in report.reject_rows if file_filter is None or r["file"] == file_filter]
    accounted = rows + len(rejects) + sum(report.skipped.values())
    if n_records == 0:  # a file with no records at all is one empty_file reject
        assert report.rejects in ({"empty_file": 1}, {}) and rows == 0
        return
    assert accounted == n_records, (rows, report.rejects, report.skipped)
    try:
        list(read(paths, format=fmt, strict=True))
    except IngestError as exc:
        assert "\n" not in str(exc)


SETTINGS = settings(
    max_examples=int(os.environ.get("TOKENCENSUS_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("fmt", sorted(BASES))
def test_mutated_json_lines(tmp_path, fmt, monkeypatch):
    base = BASES[fmt]
    if fmt == "jsonl":  # exercise the DuckDB fast path and its fallback even on tiny files
        import tokencensus.ingest.generic as generic

        monkeypatch.setattr(generic, "DUCKDB_MIN_BYTES", 0)

    @SETTINGS
    @given(st.lists(mutated(base), min_size=1, max_size=8))
    def prop(recs):
        p = tmp_path / "in.jsonl"
        n = _write_jsonl(p, recs)
        first = recs[0] if isinstance(recs[0], bytes) else b"{"
        if first.lstrip()[:1] == b"[" or first.startswith(b"PAR1"):
            n = None  # read as a JSON array / Parquet, not lines: no crash is the check
        _check([p], fmt, n)

    prop()


def test_mutated_openai_batch_pairs(tmp_path):
    out_base = {
        "id": "batch_req_1",
        "custom_id": "c",
        "response": {
            "status_code": 200,
            "body": {
                "id": "chatcmpl-1",
                "created": 1752593576,
                "model": "m",
                "choices": [{"finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2},
            },
        },
        "error": None,
    }
    in_base = {
        "custom_id": "c",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": MSGS},
    }

    @SETTINGS
    @given(
        st.lists(mutated(out_base), min_size=1, max_size=6),
        st.lists(mutated(in_base), min_size=1, max_size=6),
    )
    def prop(outs, ins):
        outs = [
            dict(o, custom_id=f"c{i}") if isinstance(o, dict) and "custom_id" in o else o
            for i, o in enumerate(outs)
        ]
        ins = [
            dict(o, custom_id=f"c{i}") if isinstance(o, dict) and "custom_id" in o else o
            for i, o in enumerate(ins)
        ]
        po, pi = tmp_path / "batch_output.jsonl", tmp_path / "batch_input.jsonl"
        n_out = _write_jsonl(po, outs)
        _write_jsonl(pi, ins)
        report = IngestReport()
        rows = sum(b.num_rows for b in read([po, pi], format="openai-batch", report=report))
        out_rejects = [r for r in report.reject_rows if r["file"] == str(po)]
        if n_out:  # (an empty output file leaves the inputs to be read on their own)
            assert rows + len(out_rejects) == n_out
        try:
            list(read([po, pi], format="openai-batch", strict=True))
        except IngestError as exc:
            assert "\n" not in str(exc)

    prop()


@pytest.mark.parametrize("duck", [False, True], ids=["python", "duckdb"])
def test_mutated_activity_csv(tmp_path, duck, monkeypatch):
    if duck:
        import tokencensus.ingest.generic as generic

        monkeypatch.setattr(generic, "DUCKDB_MIN_BYTES", 0)
    header = [
        "generation_id",
        "created_at",
        "cost_total",
        "tokens_prompt",
        "tokens_completion",
        "tokens_reasoning",
        "model_permaslug",
        "provider_name",
        "app_name",
    ]
    good = ["gen-1", "2026-03-28 17:05:34.844", "0.01", "10", "2", "0", "m", "p", "a"]
    cell = st.one_of(st.text(max_size=10), st.sampled_from(["", "-1", "1e400", "NaN", "x"]))

    @SETTINGS
    @given(
        st.lists(
            st.one_of(st.just(good), st.lists(cell, min_size=1, max_size=11)),
            min_size=1,
            max_size=8,
        )
    )
    def prop(rows):
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        written = 0
        for r in rows:
            if not any(c.strip() for c in r) and len(r) == 1:
                continue  # a blank line is not a record
            w.writerow(r)
            written += 1
        p = tmp_path / "a.csv"
        p.write_text(buf.getvalue(), encoding="utf-8", errors="surrogatepass")
        _check([p], "openrouter-csv", written)

    prop()
