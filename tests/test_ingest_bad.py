"""Bad input: every reject reason counted with file and line, never a traceback, never a
silent drop; --strict makes the first one a one-line IngestError; no prompt text leaks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard

from tokencensus.ingest import IngestError, IngestReport, read

SECRET = "TOP-SECRET-PROMPT-TEXT"
GOOD = {
    "request_id": "ok1",
    "created_at": "2026-01-01T00:00:00Z",
    "model": "m",
    "prompt_tokens": 1,
    "messages": [{"role": "user", "content": SECRET}],
}


def run(paths, **kw):
    report = IngestReport()
    rows = [r for b in read(paths, report=report, **kw) for r in b.to_pylist()]
    return rows, report


def no_leak(report: IngestReport):
    for r in report.reject_rows:
        assert SECRET not in (r["detail"] or "") and SECRET not in r["file"]


def jsonl(tmp_path: Path, lines: list[bytes | str | dict], name="x.jsonl") -> Path:
    p = tmp_path / name
    out = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        out.append(line.encode() if isinstance(line, str) else line)
    p.write_bytes(b"\n".join(out) + b"\n")
    return p


CASES = {
    "malformed_json": b'{"request_id": "a", "messages": [{"role": "user", "content": "'
    + SECRET.encode(),
    "not_an_object": b"[1, 2, 3]",
    "bad_utf8": b'{"request_id": "b", "model": "\xff\xfe", "prompt": "x"}',
    "missing_request_id": json.dumps({"model": "m", "prompt": SECRET}),
    "bad_number": json.dumps({"request_id": "c", "prompt_tokens": SECRET}),
    "bad_timestamp": json.dumps({"request_id": "d", "created_at": SECRET}),
    "bad_messages": json.dumps({"request_id": "e", "messages": [SECRET]}),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_jsonl_reject_reason(tmp_path, reason):
    p = jsonl(tmp_path, [GOOD, CASES[reason], dict(GOOD, request_id="ok2")])
    rows, report = run([p])
    assert [r["request_id"] for r in rows] == ["ok1", "ok2"]
    assert report.rejects == {reason: 1}
    assert report.reject_rows == [
        {"file": str(p), "line": 2, "reason": reason, "detail": report.reject_rows[0]["detail"]}
    ]
    no_leak(report)
    with pytest.raises(IngestError) as exc:
        run([p], strict=True)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:2: {reason}") and "\n" not in msg and SECRET not in msg


def test_negative_and_wrong_typed_numbers(tmp_path):
    p = jsonl(
        tmp_path,
        [
            GOOD,
            {"request_id": "n1", "prompt_tokens": -3},
            {"request_id": "n2", "completion_tokens": True},
            {"request_id": "n3", "cost_usd": "NaN"},
            {"request_id": "n4", "prompt_tokens": 1e300},
            {"request_id": "n5", "tool_calls": {"a": 1}},
        ],
    )
    rows, report = run([p])
    assert [r["request_id"] for r in rows] == ["ok1"]
    assert report.rejects == {"bad_number": 5}
    assert [r["line"] for r in report.reject_rows] == [2, 3, 4, 5, 6]


def test_bad_line_late_in_a_big_file_is_located(tmp_path):
    recs = [dict(GOOD, request_id=f"r{i}") for i in range(3000)]
    recs[2500] = "{not json"
    p = jsonl(tmp_path, recs)
    rows, report = run([p])
    assert len(rows) == 2999 and len({r["request_id"] for r in rows}) == 2999
    assert report.reject_rows[0]["line"] == 2501


def test_empty_files(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl").write_bytes(b"\n  \n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wb") as f:
        f.write(b"")
    rows, report = run([tmp_path])
    assert rows == [] and report.rejects == {"empty_file": 3}
    with pytest.raises(IngestError, match="empty_file"):
        run([tmp_path / "a.jsonl"], strict=True)


def test_truncated_gzip_and_zstd(tmp_path):
    body = b"".join(
        json.dumps(dict(GOOD, request_id=f"r{i}")).encode() + b"\n" for i in range(2000)
    )
    gz = gzip.compress(body)
    (tmp_path / "t.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    rows, report = run([tmp_path / "t.jsonl.gz"])
    assert 0 < len(rows) < 2000
    assert report.rejects == {"truncated_file": 1}
    assert report.reject_rows[0]["line"] is not None
    zs = zstandard.ZstdCompressor().compress(body)
    (tmp_path / "t.jsonl.zst").write_bytes(zs[: len(zs) // 2])
    rows, report = run([tmp_path / "t.jsonl.zst"])
    assert len(rows) < 2000 and report.rejects == {"truncated_file": 1}
    with pytest.raises(IngestError, match="truncated_file"):
        run([tmp_path / "t.jsonl.gz"], strict=True)
    # too short even to sniff
    (tmp_path / "u.jsonl.gz").write_bytes(gz[:15])
    rows, report = run([tmp_path / "u.jsonl.gz"])
    assert rows == [] and sum(report.rejects.values()) == 1


def test_csv_bad_rows(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(
        b"generation_id,created_at,tokens_prompt,tokens_completion,model_permaslug\n"
        b"gen-1,2026-01-01 00:00:00,1,2,m\n"
        b"gen-2,2026-01-01 00:00:00,x,2,m\n"
        b"gen-3,2026-01-01 00:00:00,1,2,m,EXTRA\n"
        b"gen-4,2026-01-01 00:00:00\n"
        b",2026-01-01 00:00:00,1,2,m\n"
        b"gen-6,not a time,1,2,m\n"
        b"gen-7,2026-01-01 00:00:00,1,2,\xff\n"
        b"gen-8,2026-01-01 00:00:00,1,2,m\n"
    )
    rows, report = run([p])
    assert report.format == "openrouter-csv"
    assert [r["request_id"] for r in rows] == ["gen-1", "gen-8"]
    assert report.rejects == {
        "bad_number": 1,
        "extra_columns": 1,
        "short_row": 1,
        "missing_request_id": 1,
        "bad_timestamp": 1,
        "bad_utf8": 1,
    }
    assert [r["line"] for r in report.reject_rows] == [3, 4, 5, 6, 7, 8]


def test_csv_missing_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("created_at,tokens_prompt\n2026-01-01,3\n")
    rows, report = run([p], format="openrouter-csv")
    assert rows == [] and report.rejects == {"missing_columns": 1}


def test_json_array_stops_at_syntax_error(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(
        '[{"id": "a", "conversations": [{"from": "human", "value": "hi"}]},'
        ' {"id": "b", "conversations": [{"from": "human", "value": "' + SECRET
    )
    rows, report = run([p], format="sharegpt")
    assert [r["request_id"] for r in rows] == ["a"]
    assert report.rejects == {"malformed_json": 1}
    no_leak(report)


def test_unknown_format_and_unreadable_sqlite(tmp_path):
    (tmp_path / "notes.txt").write_text("hello world\nno commas here\n")
    rows, report = run([tmp_path / "notes.txt"])
    assert rows == [] and report.rejects == {"unknown_format": 1}
    (tmp_path / "bad.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    rows, report = run([tmp_path / "bad.db"], format="llm-sqlite")
    assert rows == [] and report.rejects == {"unreadable_file": 1}


def test_wrong_types_in_format_readers(tmp_path):
    p = jsonl(
        tmp_path,
        [
            {
                "request": {"model": "m", "messages": [{"role": "user", "content": "q"}]},
                "response": {"id": "chatcmpl-1", "object": "chat.completion", "usage": {}},
            },
            {"request": "oops", "response": {"id": "chatcmpl-2", "object": "chat.completion"}},
            {"request": {"messages": {"not": "a list"}}, "response": {"id": "chatcmpl-3"}},
        ],
    )
    rows, report = run([p], format="openai-chat")
    assert [r["request_id"] for r in rows] == ["chatcmpl-1"]
    assert report.rejects == {"wrong_type": 1, "bad_messages": 1}


def test_broken_one_item_a_line_array_is_recounted_by_line(tmp_path):
    p = tmp_path / "s.json"
    item = '{{"id": "{}", "conversations": [{{"from": "human", "value": "hi"}}]}}'
    p.write_text(
        "[\n"
        + item.format("a")
        + ",\n"
        + '{"id": "b", "conversations": [{"from": "hu\n'
        + item.format("c")
        + ",\n"
        + item.format("d")
        + "\n]\n"
    )
    rows, report = run([p], format="sharegpt")
    assert [r["request_id"] for r in rows] == ["a", "c", "d"]
    assert report.rejects == {"malformed_json": 1} and report.reject_rows[0]["line"] == 3
