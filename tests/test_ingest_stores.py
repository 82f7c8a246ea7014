"""Readers over real stores: llm's logs.db written by the llm package itself, and LiteLLM's
spend-logs table in a real PostgreSQL server with LiteLLM's own migrations applied."""

from __future__ import annotations

import glob
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokencensus.ingest import IngestError, IngestReport, read

# --- llm logs.db ---------------------------------------------------------------------------

llm = pytest.importorskip("llm")
sqlite_utils = pytest.importorskip("sqlite_utils")
from llm.migrations import MIGRATIONS, migrate  # noqa: E402


class EchoModel(llm.Model):
    """A local model so real Response objects are produced and logged without a network."""

    model_id = "echo-test"
    can_stream = False

    def execute(self, prompt, stream, response, conversation):
        response.set_usage(
            input=11, output=4, details={"completion_tokens_details": {"reasoning_tokens": 2}}
        )
        return ["echo: " + (prompt.prompt or "")]


def rows_of(paths, **kw):
    report = IngestReport()
    rows = [r for b in read(paths, report=report, **kw) for r in b.to_pylist()]
    return rows, report


def test_llm_logs_db_turns_schema(tmp_path):
    db_path = tmp_path / "logs.db"
    db = sqlite_utils.Database(db_path)
    migrate(db)
    model = EchoModel()
    r = model.prompt("Hello world", system="You are terse")
    r.text()
    r.log_to_db(db)
    conv = model.conversation()
    r1 = conv.prompt("first question", system="Be kind")
    r1.text()
    r1.log_to_db(db)
    r2 = conv.prompt("second question")
    r2.text()
    r2.log_to_db(db)
    db.close()
    before = db_path.stat().st_mtime_ns
    rows, report = rows_of([db_path])
    assert report.format == "llm-sqlite" and report.rows == 3 and report.total_rejects == 0
    by = {row["request_id"]: row for row in rows}
    assert set(by) == {r.id, r1.id, r2.id}
    assert by[r.id]["prompt_text"] == "You are terse\nHello world"
    assert (by[r.id]["prompt_tokens"], by[r.id]["completion_tokens"]) == (11, 4)
    assert by[r.id]["reasoning_tokens"] == 2 and by[r.id]["model"] == "echo-test"
    assert by[r.id]["created_at"].tzinfo is not None
    # a later turn: the whole input chain, system first, then the messages oldest first
    assert by[r2.id]["prompt_text"] == (
        "Be kind\nfirst question\necho: first question\nsecond question"
    )
    assert db_path.stat().st_mtime_ns == before  # read in place, read-only
    assert not list(tmp_path.glob("logs.db-*"))  # no journal / wal created


def test_llm_logs_db_legacy_responses_schema(tmp_path):
    db_path = tmp_path / "old-logs.db"
    db = sqlite_utils.Database(db_path)
    # the schema as llm < 0.32 left it: every migration before the message store
    from llm.migrations import ensure_migrations_table

    ensure_migrations_table(db)
    for fn in MIGRATIONS:
        if fn.__name__ == "m023_message_store":
            break
        fn(db)
        db["_llm_migrations"].insert({"name": fn.__name__, "applied_at": "2024-12-01"})
    # rows as llm's pre-0.32 Response.log_to_db wrote them
    db["conversations"].insert({"id": "01conv", "name": "hi", "model": "gpt-4o-mini"})
    db["responses"].insert_all(
        [
            {
                "id": "01j0000000000000000000000a",
                "model": "gpt-4o-mini",
                "prompt": "Tell me a joke",
                "system": "You are funny",
                "prompt_json": None,
                "options_json": "{}",
                "response": "...",
                "response_json": None,
                "conversation_id": "01conv",
                "duration_ms": 10,
                "datetime_utc": "2024-12-01T10:00:00.123456",
                "input_tokens": 9,
                "output_tokens": 20,
                "token_details": json.dumps({"prompt_tokens_details": {"cached_tokens": 4}}),
                "resolved_model": "gpt-4o-mini-2024-07-18",
            },
            {
                "id": "01j0000000000000000000000b",
                "model": "claude-3.5-sonnet",
                "prompt": "Hi",
                "system": None,
                "conversation_id": "01conv",
                "datetime_utc": "2024-12-01T11:00:00",
                "input_tokens": None,
                "output_tokens": None,
                "token_details": None,
            },
        ]
    )
    db.close()
    rows, report = rows_of([db_path])
    assert report.rows == 2
    by = {row["request_id"]: row for row in rows}
    a = by["01j0000000000000000000000a"]
    assert a["prompt_text"] == "You are funny\nTell me a joke"
    assert a["model"] == "gpt-4o-mini-2024-07-18" and a["cached_tokens"] == 4
    assert a["created_at"] == datetime(2024, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert by["01j0000000000000000000000b"]["prompt_text"] == "Hi"
    # upgrading the same file to the current schema keeps both kinds of rows readable
    db = sqlite_utils.Database(db_path)
    migrate(db)
    r = EchoModel().prompt("new style")
    r.text()
    r.log_to_db(db)
    db.close()
    rows, report = rows_of([db_path])
    assert report.rows == 3 and {row["prompt_text"] for row in rows} >= {"new style", "Hi"}


# --- LiteLLM in PostgreSQL ---------------------------------------------------------------------

PG_DSN = os.environ.get(
    "TOKENCENSUS_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)


def _pg_or_skip():
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(PG_DSN, connect_timeout=3, autocommit=True)
    except psycopg.Error as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable in CI ({PG_DSN}): {exc}")
        pytest.skip(f"PostgreSQL unreachable ({exc}); run .ci/postgres.sh")
    return psycopg, conn


def _migrations() -> list[str]:
    extras = pytest.importorskip("litellm_proxy_extras")
    base = Path(extras.__file__).parent / "migrations"
    files = sorted(glob.glob(str(base / "*" / "migration.sql")))
    if not files:
        pytest.skip("litellm-proxy-extras ships no migrations")
    return files


@pytest.fixture
def litellm_db():
    psycopg, admin = _pg_or_skip()
    files = _migrations()
    name = f"tc_litellm_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_DSN.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for f in files:  # LiteLLM's Prisma migrations, in order
                conn.execute(Path(f).read_text())
        yield dsn
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_litellm_postgres_real_schema(litellm_db):
    import psycopg
    from psycopg.types.json import Jsonb

    n = 12000  # more than one server-side cursor batch
    with psycopg.connect(litellm_db) as conn, conn.cursor() as cur:
        rows = []
        for i in range(n):
            stored = i % 3 == 0
            rows.append(
                (
                    f"req-{i:05d}",
                    "acompletion",
                    "hashed",
                    0.001 * (i % 7),
                    150,
                    100 + i % 5,
                    50,
                    datetime(2026, 4, 1, 8, 0, 0) if i else datetime(2026, 3, 31, 23, 0, 0),
                    datetime(2026, 4, 1, 8, 0, 1),
                    "gpt-4o-mini" if i % 2 else "",
                    "openai-mini",
                    "openai",
                    "internal-user",
                    Jsonb(
                        {
                            "usage_object": {
                                "completion_tokens_details": {"reasoning_tokens": i % 4},
                                "prompt_tokens_details": {"cached_tokens": 8},
                            }
                        }
                    ),
                    f"cust-{i % 10}" if i % 5 else None,
                    Jsonb(
                        [
                            {"role": "system", "content": "sys"},
                            {"role": "user", "content": f"question {i}"},
                        ]
                        if stored
                        else {}
                    ),
                    Jsonb({"choices": [{"finish_reason": "stop", "message": {"content": "x"}}]}),
                )
            )
        cur.executemany(
            'INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens,'
            ' prompt_tokens, completion_tokens, "startTime", "endTime", model, model_group,'
            ' custom_llm_provider, "user", metadata, end_user, messages, response)'
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            rows,
        )
    out, report = rows_of([litellm_db])
    assert report.format == "litellm-pg" and report.rows == n and report.total_rejects == 0
    by = {r["request_id"]: r for r in out}
    r0, r1, r5 = by["req-00000"], by["req-00001"], by["req-00005"]
    assert r0["prompt_text"] == "sys\nquestion 0" and r1["prompt_text"] is None
    assert r0["model"] == "openai-mini" and r1["model"] == "gpt-4o-mini"  # model, else group
    assert r1["reasoning_tokens"] == 1 and r1["cached_tokens"] == 8
    assert r1["user_key"] == "cust-1" and r5["user_key"] == "internal-user"  # end_user, else user
    assert r0["created_at"] == datetime(2026, 3, 31, 23, tzinfo=UTC)
    assert r1["finish_reason"] == "stop" and r1["provider"] == "openai"
    assert out[0]["request_id"] == "req-00000"  # ordered by startTime
    # ?since= filters on startTime; a bad DSN is one IngestError line without the password
    since, _ = rows_of([litellm_db + "?since=2026-04-01"])
    assert len(since) == n - 1
    bad = litellm_db.replace("postgres:postgres@", "postgres:secret@").rsplit("/", 1)[0] + "/nodb"
    with pytest.raises(IngestError) as exc:
        list(read([bad]))
    assert "secret" not in str(exc.value) and "\n" not in str(exc.value)
