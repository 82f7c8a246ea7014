"""Each format's reader: detection, fields, and how its messages become the prompt text."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tokencensus.ingest import IngestError, IngestReport, detect, parse_map, read, readers
from tokencensus.ingest.generic import duckdb_plan
from tokencensus.ingest.join import JoinStats, join_prompts
from tokencensus.schema import REQUEST_SCHEMA

DATA = Path(__file__).parent / "data" / "ingest"


def rows_of(paths, **kw):
    report = IngestReport()
    rows = [r for b in read(paths, report=report, **kw) for r in b.to_pylist()]
    return {r["request_id"]: r for r in rows}, report


def test_registry_names_and_detection():
    names = set(readers())
    assert {
        "openrouter-csv",
        "openrouter-json",
        "litellm",
        "litellm-pg",
        "langfuse",
        "llm-sqlite",
        "openai-chat",
        "openai-batch",
        "sharegpt",
        "lmsys",
        "wildchat",
        "jsonl",
        "csv",
        "parquet",
    } <= names
    expected = {
        "langfuse_observations.json": "langfuse",
        "langfuse_observations.csv": "langfuse",
        "langfuse_traces.jsonl": "langfuse",
        "litellm_spendlogs.csv": "litellm",
        "sharegpt.json": "sharegpt",
        "lmsys.jsonl": "lmsys",
        "wildchat.jsonl": "wildchat",
        "openai_chat.jsonl": "openai-chat",
        "openrouter_generations.jsonl": "openrouter-json",
    }
    for name, fmt in expected.items():
        assert detect(DATA / name).name == fmt, name


def test_every_batch_has_the_canonical_schema():
    for b in read([DATA]):
        assert b.schema.equals(REQUEST_SCHEMA)


def test_langfuse_observations_with_traces():
    rows, report = rows_of([DATA / "langfuse_observations.json", DATA / "langfuse_traces.jsonl"])
    assert report.format == "langfuse"
    assert set(rows) == {"obs-1", "obs-3", "obs-4"}
    assert report.skipped == {"langfuse_span": 1, "langfuse_trace": 2}
    o1 = rows["obs-1"]
    assert o1["prompt_text"] == "Be brief.\nSummarise this memo."  # messages list
    assert (o1["prompt_tokens"], o1["completion_tokens"], o1["cached_tokens"]) == (120, 30, 64)
    assert o1["cost_usd"] == pytest.approx(0.0003)  # costDetails.total
    assert o1["user_key"] == "user-a"  # trace userId joined by traceId
    assert o1["created_at"] == datetime(2026, 5, 1, 10, tzinfo=UTC)
    o3 = rows["obs-3"]
    assert o3["prompt_text"] == "You are a tutor.\nSolve x+1=2"  # {messages, system}
    assert o3["reasoning_tokens"] == 320 and o3["cost_usd"] == pytest.approx(0.002)
    assert o3["user_key"] == "user-b"
    assert report.multimodal_parts_skipped == 1  # the image part
    o4 = rows["obs-4"]
    assert o4["prompt_text"] == "Translate 'hello' to French"  # a string input
    assert (o4["prompt_tokens"], o4["completion_tokens"]) == (9, 3)  # legacy usage
    assert o4["user_key"] is None


def test_langfuse_csv_and_jsonl_and_embedded_trace(tmp_path):
    rows, report = rows_of([DATA / "langfuse_observations.csv"])
    assert set(rows) == {"obs-c1"} and report.skipped == {"langfuse_event": 1}
    assert rows["obs-c1"]["prompt_text"] == "Write a haiku"
    assert rows["obs-c1"]["cost_usd"] == pytest.approx(0.0004)
    obs = json.loads((DATA / "langfuse_observations.json").read_text())
    p = tmp_path / "obs.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in obs) + "\n")
    rows2, _ = rows_of([p])
    assert set(rows2) == {"obs-1", "obs-3", "obs-4"}
    trace = {
        "id": "tr-9",
        "timestamp": "2026-05-01T10:00:00Z",
        "userId": "emb-user",
        "htmlPath": "/x",
        "observations": [dict(obs[0], id="obs-e", traceId="tr-9")],
    }
    p2 = tmp_path / "traces_full.json"
    p2.write_text(json.dumps({"data": [trace], "meta": {"page": 1}}, indent=2))
    rows3, _ = rows_of([p2], format="langfuse")
    assert rows3["obs-e"]["user_key"] == "emb-user"


def test_litellm_export_csv_and_json(tmp_path):
    rows, report = rows_of([DATA / "litellm_spendlogs.csv"])
    assert report.format == "litellm" and report.total_rejects == 0
    a = rows["chatcmpl-aa1"]
    assert a["prompt_text"] == "You are a search assistant.\nFind cheap flights"
    assert a["reasoning_tokens"] == 7 and a["cached_tokens"] == 64
    assert a["user_key"] == "customer-9"  # end_user first
    assert a["cost_usd"] == pytest.approx(0.00042)
    assert a["model"] == "gpt-4o-mini" and a["provider"] == "openai"
    assert a["finish_reason"] == "stop" and a["app"] == "search-team"
    assert a["created_at"] == datetime(2026, 4, 1, 8, 0, 0, 123000, tzinfo=UTC)
    b = rows["chatcmpl-aa2"]
    assert b["prompt_text"] is None  # messages = {} : prompts not stored
    assert b["user_key"] == "internal-2"  # no end_user -> user
    # the same rows as a JSON-lines export with real JSON columns
    recs = [
        {
            "request_id": "r1",
            "call_type": "completion",
            "spend": 0.5,
            "startTime": "2026-04-02T00:00:00Z",
            "model": "",
            "model_group": "grp",
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "end_user": "",
            "user": "u",
            "metadata": {"usage_object": {"completion_tokens_details": {}}},
            "messages": [{"role": "user", "content": "hi"}],
        }
    ]
    p = tmp_path / "spend.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rows, report = rows_of([p])
    assert report.format == "litellm"
    assert rows["r1"]["model"] == "grp" and rows["r1"]["user_key"] == "u"
    assert rows["r1"]["prompt_text"] == "hi"


def test_sharegpt_lmsys_wildchat():
    rows, report = rows_of([DATA / "sharegpt.json"])
    assert rows["sg-1"]["prompt_text"] == "How do I reverse a list in Python?"  # first turn only
    assert rows["sg-2"]["prompt_text"] == "You are a poet.\nWrite about rain."  # system first
    assert report.rejects == {"no_user_turn": 1}
    rows, _ = rows_of([DATA / "lmsys.jsonl"])
    assert rows["lm-1"]["model"] == "vicuna-13b" and rows["lm-2"]["language"] == "French"
    assert rows["lm-1"]["prompt_text"] == "What is the capital of France?"
    rows, _ = rows_of([DATA / "wildchat.jsonl"])
    w = rows["wc-1"]
    assert w["prompt_text"] == "Fix this SQL query" and w["user_key"] == "abc123"
    assert w["created_at"] == datetime(2023, 5, 10, 12, tzinfo=UTC)


def test_chat_dumps_as_parquet_and_jsonl(tmp_path):
    convs = json.loads((DATA / "sharegpt.json").read_text())
    pq.write_table(pa.Table.from_pylist(convs), tmp_path / "sg.parquet")
    rows, report = rows_of([tmp_path / "sg.parquet"])
    assert report.format == "sharegpt" and set(rows) == {"sg-1", "sg-2"}
    lm = [json.loads(x) for x in (DATA / "lmsys.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(lm), tmp_path / "lm.parquet")
    rows, report = rows_of([tmp_path / "lm.parquet"])
    assert report.format == "lmsys" and rows["lm-2"]["prompt_text"] == "Bonjour, écris un poème"
    (tmp_path / "sg.jsonl").write_text("\n".join(json.dumps(c) for c in convs))
    rows, _ = rows_of([tmp_path / "sg.jsonl"], format="sharegpt")
    assert set(rows) == {"sg-1", "sg-2"}


def test_openai_chat_log():
    rows, report = rows_of([DATA / "openai_chat.jsonl"])
    x1 = rows["chatcmpl-x1"]
    assert x1["prompt_text"] == "Answer in JSON.\nList three colours"  # developer first
    assert x1["model"] == "gpt-4o-2024-08-06" and x1["user_key"] == "cust-7"
    assert x1["tool_calls"] == 1 and x1["finish_reason"] == "tool_calls"
    assert report.multimodal_parts_skipped == 1  # the audio part
    x2 = rows["chatcmpl-x2"]
    assert x2["reasoning_tokens"] == 190 and x2["prompt_text"] is None
    assert x2["created_at"] == datetime.fromtimestamp(1752593600, tz=UTC)


def test_openrouter_generation_json_lines_and_array(tmp_path):
    rows, _ = rows_of([DATA / "openrouter_generations.jsonl"])
    g = rows["gen-1774717534-AAAAAAAAAAAAAAAAAAAA"]
    assert g["prompt_text"] == "Plan a trip to Rome" and g["reasoning_tokens"] == 8
    assert g["user_key"] == "u-1" and g["app"] == "12"
    recs = [json.loads(x) for x in (DATA / "openrouter_generations.jsonl").read_text().splitlines()]
    p = tmp_path / "gens.json"
    p.write_text(json.dumps([r["data"] | {"input": r.get("input")} for r in recs], indent=1))
    rows2, report = rows_of([p])
    assert report.format == "openrouter-json" and set(rows2) == set(rows)
    assert rows2["gen-1774717534-AAAAAAAAAAAAAAAAAAAA"]["prompt_text"] == "Plan a trip to Rome"


# --- generic formats, map, compression, globs -------------------------------------------------

GENERIC = [
    {
        "id": "g1",
        "timestamp": "2026-01-01T00:00:00Z",
        "engine": "m1",
        "input_tokens": 5,
        "messages": [{"role": "user", "content": "hello"}, {"role": "system", "content": "sys"}],
    },
    {
        "id": "g2",
        "timestamp": 1767225600,
        "engine": "m2",
        "input_tokens": "7",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "u"}},
                ],
            }
        ],
    },
    {"id": "g3", "timestamp": 1767225600000, "engine": "m2", "messages": []},
]


def _write_jsonl(p: Path, recs, opener=open):
    with opener(p, "wt") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def test_generic_jsonl_alias_and_prompt_rule(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", GENERIC)
    rows, report = rows_of([tmp_path / "a.jsonl"])
    assert report.format == "jsonl"
    assert rows["g1"]["prompt_text"] == "sys\nhello"  # system first, then client order
    assert rows["g1"]["model"] == "m1" and rows["g1"]["prompt_tokens"] == 5
    assert rows["g2"]["prompt_text"] == "a" and rows["g2"]["prompt_tokens"] == 7
    assert rows["g2"]["created_at"] == rows["g3"]["created_at"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert rows["g3"]["prompt_text"] is None
    assert report.multimodal_parts_skipped == 1


def test_duckdb_and_python_paths_agree(tmp_path):
    recs = GENERIC + [
        {
            "id": 17,
            "created_at": "2026-02-01 10:00:00",
            "model": "m",
            "cost": "0.5",
            "tool_calls": [{"a": 1}, {"b": 2}],
            "user": "u",
            "completion_tokens": 2.7,
            "messages": [{"from": "human", "value": "v"}, {"role": "developer", "content": "d"}],
        },
    ]
    p = tmp_path / "a.jsonl"
    _write_jsonl(p, recs)
    assert duckdb_plan(p, {}) is not None
    import tokencensus.ingest.generic as g

    g.DUCKDB_MIN_BYTES, old_min = 0, g.DUCKDB_MIN_BYTES
    try:
        fast, r1 = rows_of([p])
    finally:
        g.DUCKDB_MIN_BYTES = old_min
    slow, r2 = rows_of([p])  # a small file: the Python path
    assert fast == slow
    assert r1.multimodal_parts_skipped == r2.multimodal_parts_skipped == 1
    assert fast["17"]["prompt_text"] == "d\nv" and fast["17"]["tool_calls"] == 2


def test_generic_map_dotted_and_compressed(tmp_path):
    recs = [
        {
            "rid": f"r{i}",
            "meta": {"engine": "e", "usage": {"in": i}},
            "conv": [{"role": "user", "content": f"q{i}"}],
        }
        for i in range(5)
    ]
    _write_jsonl(tmp_path / "a.jsonl.gz", recs, gzip.open)
    raw = "".join(json.dumps(r) + "\n" for r in recs).encode()
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    mapping = parse_map(
        "request_id=rid,model=meta.engine,prompt_tokens=meta.usage.in,prompt_text=conv"
    )
    for name in ("a.jsonl.gz", "b.jsonl.zst"):
        rows, report = rows_of([tmp_path / name], mapping=mapping)
        assert len(rows) == 5 and report.total_rejects == 0, name
        assert rows["r3"]["model"] == "e" and rows["r3"]["prompt_tokens"] == 3
        assert rows["r3"]["prompt_text"] == "q3"
    with pytest.raises(IngestError):
        parse_map("nonsense=x")


def test_globs_and_directories(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    _write_jsonl(tmp_path / "d" / "x.jsonl", GENERIC[:1])
    _write_jsonl(tmp_path / "d" / "sub" / "y.jsonl", GENERIC[1:2])
    (tmp_path / "d" / ".hidden").write_text("ignored")
    rows, _ = rows_of([tmp_path / "d"])
    assert set(rows) == {"g1", "g2"}
    rows, _ = rows_of([str(tmp_path / "d" / "**" / "*.jsonl")])
    assert set(rows) == {"g1", "g2"}
    with pytest.raises(IngestError, match="no file matches"):
        list(read([str(tmp_path / "nope*.jsonl")]))


def test_generic_csv_and_parquet(tmp_path):
    (tmp_path / "a.csv").write_text(
        "request_id,created_at,model,prompt_tokens,cost,prompt\n"
        'c1,2026-01-01 00:00:00,m,3,0.1,"hi, there"\n'
        "c2,2026-01-02 00:00:00,m,,,\n"
    )
    rows, report = rows_of([tmp_path / "a.csv"])
    assert report.format == "csv" and rows["c1"]["prompt_text"] == "hi, there"
    assert rows["c2"]["prompt_tokens"] is None
    t = pa.table(
        {
            "request_id": ["p1", "p2"],
            "created_at": pa.array(
                [datetime(2026, 1, 1), datetime(2026, 1, 2)], pa.timestamp("ms")
            ),
            "model": ["a", "b"],
            "prompt_tokens": pa.array([1, 2], pa.int32()),
            "completion_tokens": [3, 4],
            "prompt_text": ["x", None],
        }
    )
    pq.write_table(t, tmp_path / "a.parquet")
    rows, report = rows_of([tmp_path / "a.parquet"])
    assert report.format == "parquet" and rows["p1"]["prompt_tokens"] == 1
    assert rows["p2"]["created_at"] == datetime(2026, 1, 2, tzinfo=UTC)
    # strings where numbers belong: the batch is re-read row by row, each bad row rejected
    t2 = pa.table(
        {
            "id": ["q1", "q2", "q3"],
            "prompt_tokens": ["4", "x", None],
            "created": [1767225600, 1767225600, 1767225600],
        }
    )
    pq.write_table(t2, tmp_path / "b.parquet")
    rows, report = rows_of([tmp_path / "b.parquet"])
    assert set(rows) == {"q1", "q3"} and report.rejects == {"bad_number": 1}
    assert report.reject_rows[0]["line"] == 2
    assert rows["q1"]["created_at"] == datetime(2026, 1, 1, tzinfo=UTC)


# --- join -------------------------------------------------------------------------------------


def test_join_prompts_onto_activity_csv(tmp_path):
    meta = read([Path("/work/shared/log-samples/openrouter/sample.csv")])
    ids = [
        r["request_id"]
        for b in read([Path("/work/shared/log-samples/openrouter/sample.csv")])
        for r in b.to_pylist()
    ]
    prompts = [{"request_id": rid, "prompt": f"prompt {i}"} for i, rid in enumerate(ids[:10])]
    prompts.append({"request_id": "gen-unknown", "prompt": "orphan"})
    _write_jsonl(tmp_path / "p.jsonl", prompts)
    stats = JoinStats()
    out = [
        r for b in join_prompts(meta, [tmp_path / "p.jsonl"], stats=stats) for r in b.to_pylist()
    ]
    assert len(out) == 68 and stats.matched == 10 and stats.meta_rows == 68
    by = {r["request_id"]: r for r in out}
    assert by[ids[3]]["prompt_text"] == "prompt 3" and by[ids[3]]["prompt_tokens"] is not None
    assert by[ids[20]]["prompt_text"] is None


def test_parquet_dictionary_models_counted_and_decoded(tmp_path):
    """A dictionary-encoded model column: distinct models from the indices, strings in the output."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokencensus import ingest as ing

    models = pa.array(["a/x", "b/y", "a/x", None, "c/z"]).dictionary_encode()
    table = pa.table(
        {
            "request_id": [f"r{i}" for i in range(5)],
            "model": models,
            "prompt_tokens": [1, 2, 3, 4, 5],
        }
    )
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    report = ing.IngestReport()
    batches = list(ing.read([path], report=report))
    assert report.models == {"a/x", "b/y", "c/z"}
    out = pa.Table.from_batches(batches)
    assert out.schema.field("model").type == pa.string()
    assert out.column("model").to_pylist() == ["a/x", "b/y", "a/x", None, "c/z"]


def test_parquet_row_groups_in_parallel_keep_order_and_reject_lines(tmp_path, monkeypatch):
    """Many row groups are read on a thread pool: the output is in file order, identical to
    the one-by-one path, and a bad value in one group is rejected with its file line."""
    from tokencensus.ingest import generic

    n = 5_000
    tokens = pa.array(list(range(n)), pa.int64())
    table = pa.table(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "model": pa.array([f"m{i % 7}" for i in range(n)]).dictionary_encode(),
            "prompt_tokens": tokens,
        }
    )
    bad = table.to_pylist()
    bad[3_210]["prompt_tokens"] = -5  # negative tokens: that row group goes row by row
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.Table.from_pylist(bad, schema=table.schema), path, row_group_size=300)
    assert pq.ParquetFile(path).metadata.num_row_groups == 17

    def ids_and_rejects():
        report = IngestReport()
        ids = [r for b in read([path], report=report) for r in b.column("request_id").to_pylist()]
        return ids, report

    monkeypatch.setattr(generic.os, "cpu_count", lambda: 4)
    ids, report = ids_and_rejects()
    assert ids == [f"r{i}" for i in range(n) if i != 3_210]
    assert report.rejects == {"bad_number": 1} and report.reject_rows[0]["line"] == 3_211
    assert report.models == {f"m{i}" for i in range(7)}
    monkeypatch.setattr(generic, "MAX_PARALLEL_GROUP", 100)  # groups too big: one by one
    assert ids_and_rejects()[0] == ids
