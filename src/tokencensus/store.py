"""The metadata-only store: one DuckDB file plus Parquet tables partitioned by week.

It holds request metadata, labels and bucket assignments; never prompt text
(the ``prompt_text`` column is dropped before any write). Writes are
idempotent (``INSERT OR IGNORE`` on the request id) and each batch commits in
one transaction, so a run killed at any point resumes and ends identical to a
run that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from tokencensus.ingest import REJECT_SCHEMA
from tokencensus.schema import METADATA_COLUMNS

DB_NAME = "tokencensus.duckdb"

DDL = """
CREATE TABLE IF NOT EXISTS requests (
    request_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ,
    model VARCHAR,
    provider VARCHAR,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    reasoning_tokens BIGINT,
    cached_tokens BIGINT,
    cost_usd DOUBLE,
    user_key VARCHAR,
    app VARCHAR,
    finish_reason VARCHAR,
    language VARCHAR,
    tool_calls INTEGER,
    has_prompt BOOLEAN,
    sampled BOOLEAN,
    weight DOUBLE,
    source_file VARCHAR
);
CREATE TABLE IF NOT EXISTS labels (
    request_id VARCHAR,
    path VARCHAR,
    confidence REAL,
    rank INTEGER,
    PRIMARY KEY (request_id, path)
);
CREATE TABLE IF NOT EXISTS assignments (
    request_id VARCHAR PRIMARY KEY,
    primary_bucket VARCHAR,
    buckets VARCHAR[],
    subtag VARCHAR,
    top_path VARCHAR,
    confidence REAL,
    decided_by VARCHAR,
    error VARCHAR
);
CREATE TABLE IF NOT EXISTS rejects (
    file VARCHAR, line BIGINT, reason VARCHAR, detail VARCHAR
);
CREATE TABLE IF NOT EXISTS files (
    path VARCHAR PRIMARY KEY, size BIGINT, mtime DOUBLE, format VARCHAR,
    rows BIGINT, done_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
"""

PARQUET_TABLES = ("requests", "labels", "assignments", "rejects", "catalog")

#: The ISO week (its Monday, UTC) a request falls in: the Parquet partition key.
WEEK_SQL = "strftime(date_trunc('week', created_at AT TIME ZONE 'UTC'), '%Y-%m-%d')"

#: Tables compared by :func:`canonical_dump`, each with the columns that vary between
#: otherwise identical runs left out (when a file was finished, its mtime).
DUMP_TABLES = {
    "requests": "*",
    "labels": "*",
    "assignments": "*",
    "rejects": "*",
    "catalog": "*",
    "meta": "*",
    "files": "path, size, format, rows, done_at IS NOT NULL AS done",
}


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any exception, Ctrl-C included: a batch or a file is
    either all in the store or not at all, which is what resuming relies on."""
    con.execute("BEGIN")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except Exception:
            pass
        raise


class Store:
    """A DuckDB file in ``out_dir``; every write is a transaction."""

    def __init__(self, out_dir: Path, read_only: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(
                    f"{self.path}: no tokencensus store here (run `tokencensus run` first)"
                )
            self.con = duckdb.connect(str(self.path), read_only=True)
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(self.path))
            self.con.execute(DDL)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- run settings ---------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def check_settings(self, settings: dict) -> None:
        """Record the run's sampling/classifier settings; refuse to mix incompatible runs."""
        current = self.get_meta()
        fixed = {k: str(v) for k, v in settings.items()}
        clash = {k: (current[k], v) for k, v in fixed.items() if k in current and current[k] != v}
        if clash:
            k, (old, new) = next(iter(clash.items()))
            raise ValueError(
                f"{self.out_dir}: this store was built with {k}={old}, not {new}; "
                "use a new --out folder (estimates from mixed settings would be wrong)"
            )
        self.con.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, v) for k, v in fixed.items()]
        )

    # -- files ----------------------------------------------------------------
    def file_done(self, path: Path | str) -> bool:
        """Whether ``path`` (same size and mtime) was fully ingested before.

        A database DSN is never done: its table grows, and rows already stored are
        skipped anyway."""
        if not isinstance(path, Path):
            return False
        st = path.stat()
        rows = self.con.execute(
            "SELECT size, mtime FROM files WHERE path = ? AND done_at IS NOT NULL", [str(path)]
        ).fetchall()  # fetchall: DuckDB refuses register() while a result is unfinished
        row = rows[0] if rows else None
        return row is not None and row[0] == st.st_size and abs(row[1] - st.st_mtime) < 1e-6

    def start_file(self, path: Path | str) -> None:
        """Forget a partial earlier attempt's rejects for ``path`` (rows stay: they are idempotent)."""
        self.con.execute("DELETE FROM rejects WHERE file = ?", [source_name(path)])

    def finish_file(self, path: Path | str, fmt: str, rows: int, rejects: pa.Table) -> None:
        """Record ``path`` as fully ingested, with its rejects, in one transaction."""
        st = path.stat() if isinstance(path, Path) else None
        con = self.con
        with transaction(con):
            if rejects.num_rows:
                con.register("_rej", rejects.cast(REJECT_SCHEMA))
                con.execute("INSERT INTO rejects SELECT * FROM _rej")
                con.unregister("_rej")
            con.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                [
                    source_name(path),
                    st.st_size if st else None,
                    st.st_mtime if st else None,
                    fmt,
                    rows,
                    datetime.now(UTC),
                ],
            )

    # -- rows -----------------------------------------------------------------
    def classified_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` already have an assignment (so a rerun skips them)."""
        if not ids:
            return set()
        self.con.register("_ids", pa.table({"request_id": ids}))
        done = self.con.execute(
            "SELECT a.request_id FROM assignments a JOIN _ids USING (request_id)"
        ).fetchall()
        self.con.unregister("_ids")
        return {r[0] for r in done}

    def write_batch(
        self,
        requests: pa.Table,
        source_file: str,
        predictions: pa.Table | None = None,
        assignments: pa.Table | None = None,
    ) -> None:
        """Write one batch's metadata, labels and assignments in a single transaction."""
        meta_cols = [c for c in METADATA_COLUMNS if c in requests.column_names]
        con = self.con
        con.register("_req", requests)
        try:
            with transaction(con):
                cols = ", ".join(meta_cols)
                con.execute(
                    f"""
                    INSERT OR IGNORE INTO requests
                        ({cols}, has_prompt, sampled, weight, source_file)
                    SELECT {cols}, prompt_text IS NOT NULL AND prompt_text <> '', sampled, weight, ?
                    FROM _req
                    """,
                    [source_name(source_file)],
                )
                if predictions is not None and predictions.num_rows:
                    con.register("_pred", predictions)
                    con.execute(
                        """
                        INSERT OR IGNORE INTO labels
                        SELECT request_id, labels[i].path, labels[i].confidence, i FROM (
                            SELECT request_id, labels, generate_subscripts(labels, 1) AS i
                            FROM _pred)
                        """
                    )
                if assignments is not None and assignments.num_rows:
                    con.register("_asg", assignments)
                    if predictions is not None:
                        con.execute(
                            """
                            INSERT OR IGNORE INTO assignments
                            SELECT a.request_id, a.primary_bucket, a.buckets, a.subtag, a.top_path,
                                   a.confidence, a.decided_by, p.error
                            FROM _asg a LEFT JOIN _pred p USING (request_id)
                            """
                        )
        finally:
            for name in ("_req", "_pred", "_asg"):
                try:
                    con.unregister(name)
                except Exception:
                    pass

    def set_catalog(self, catalog: pa.Table) -> None:
        """Replace the model-metadata table (one row per logged model)."""
        self.con.register("_cat", catalog)
        self.con.execute("CREATE OR REPLACE TABLE catalog AS SELECT * FROM _cat")
        self.con.unregister("_cat")

    def export_parquet(self) -> dict[str, Path]:
        """Write the tables as Parquet under ``out/parquet``; ``requests`` partitioned by week.

        The export is rebuilt from scratch into a temporary folder and swapped in
        whole, so it is exactly reproducible (rows sorted, one file per week),
        never keeps a partition that is no longer in the store, and a run killed
        part way leaves either the previous export or none, never a mix.
        """
        final = self.out_dir / "parquet"
        tmp = self.out_dir / ".parquet.tmp"
        old = self.out_dir / ".parquet.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tables = {r[0] for r in self.con.execute("SHOW TABLES").fetchall()}
        names = []
        for name in PARQUET_TABLES:
            if name not in tables:
                continue
            names.append(name)
            if name == "requests":
                self._export_requests(tmp / "requests")
            else:
                self._copy(f"SELECT * FROM {name} ORDER BY ALL", tmp / f"{name}.parquet")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return {
            name: final / ("requests" if name == "requests" else f"{name}.parquet")
            for name in names
        }

    def _export_requests(self, target: Path) -> None:
        """One Parquet file per ISO week (``requests/week=YYYY-MM-DD/part_0.parquet``)."""
        target.mkdir(parents=True)
        week = WEEK_SQL
        weeks = [
            r[0]
            for r in self.con.execute(
                f"SELECT DISTINCT {week} AS w FROM requests ORDER BY w NULLS LAST"
            ).fetchall()
        ]
        for w in weeks:
            folder = target / f"week={w if w is not None else 'NULL'}"
            folder.mkdir()
            cond = f"{week} = $w" if w is not None else "created_at IS NULL"
            self._copy(
                f"SELECT * FROM requests WHERE {cond} ORDER BY request_id",
                folder / "part_0.parquet",
                {"w": w} if w is not None else None,
            )

    def _copy(self, query: str, target: Path, params: dict | None = None) -> None:
        self.con.execute(
            f"COPY ({query}) TO '{_sql_path(target)}' (FORMAT parquet, COMPRESSION zstd)",
            params or {},
        )

    def load_parquet(
        self,
        requests: Path | str,
        predictions: Path | str | None = None,
        assignments: Path | str | None = None,
        order_by: list[str] | None = None,
    ) -> None:
        """Load Parquet written by another engine (Ray Data) in one transaction.

        ``requests`` has the metadata columns plus ``has_prompt``, ``sampled``,
        ``weight`` and ``source_file`` (no prompt text); ``predictions`` and
        ``assignments`` have the columns of :data:`~tokencensus.classify.PREDICTION_SCHEMA`
        and of :func:`~tokencensus.buckets.assign_batch`. Same idempotent rules as
        :meth:`write_batch`: rows already there are kept, so reloading changes nothing.
        Of several rows with one request id, the first in ``order_by`` order is kept
        (default: source file, then the id), as the local path keeps the first read.
        """
        order = ", ".join(order_by or ["source_file", "request_id"])
        con = self.con
        cols = ", ".join([*METADATA_COLUMNS, "has_prompt", "sampled", "weight", "source_file"])

        def src(p: Path | str) -> str:
            p = Path(p)
            return _sql_path(p / "**" / "*.parquet" if p.is_dir() else p)

        with transaction(con):
            con.execute(
                f"""INSERT OR IGNORE INTO requests ({cols})
                    SELECT {cols} FROM read_parquet('{src(requests)}', union_by_name = true)
                    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY {order}) = 1"""
            )
            if predictions is not None and _has_parquet(predictions):
                con.execute(
                    f"""
                    INSERT OR IGNORE INTO labels
                    SELECT request_id, labels[i].path, labels[i].confidence, i FROM (
                        SELECT request_id, labels, generate_subscripts(labels, 1) AS i
                        FROM (SELECT DISTINCT ON (request_id) request_id, labels
                              FROM read_parquet('{src(predictions)}', union_by_name = true)))
                    """
                )
                if assignments is not None and _has_parquet(assignments):
                    con.execute(
                        f"""
                        INSERT OR IGNORE INTO assignments
                        SELECT a.request_id, a.primary_bucket, a.buckets, a.subtag, a.top_path,
                               a.confidence, a.decided_by, p.error
                        FROM (SELECT DISTINCT ON (request_id) *
                              FROM read_parquet('{src(assignments)}', union_by_name = true)) a
                        LEFT JOIN (SELECT DISTINCT ON (request_id) request_id, error
                              FROM read_parquet('{src(predictions)}', union_by_name = true)) p
                        USING (request_id)
                        """
                    )

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file."""
        self.con.execute("CHECKPOINT")

    def summary(self) -> dict:
        """Row counts, for the CLI and tests."""

        def q(sql: str) -> int:
            return self.con.execute(sql).fetchall()[0][0]

        return {
            "requests": q("SELECT count(*) FROM requests"),
            "sampled": q("SELECT count(*) FROM requests WHERE sampled"),
            "classified": q("SELECT count(*) FROM assignments"),
            "rejects": q("SELECT count(*) FROM rejects"),
            "settings": json.dumps(self.get_meta(), sort_keys=True),
        }


def source_name(path: Path | str) -> str:
    """How a source is named in the store: its path, or a DSN without its password."""
    from tokencensus.ingest import display_name

    return display_name(path)


def _sql_path(p: Path | str) -> str:
    return str(p).replace("'", "''")


def _has_parquet(p: Path | str) -> bool:
    p = Path(p)
    return p.is_file() or (p.is_dir() and any(p.rglob("*.parquet")))


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` to disk before it is swapped in."""
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def canonical_dump(out_dir: Path | str) -> dict:
    """Every table of a run's store and the content of its Parquet export, canonically
    ordered: two runs that ended in the same state give equal dumps (used by the
    resume and Ray tests, and handy to compare two output folders)."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    dump: dict = {}
    con = duckdb.connect(str(out_dir / DB_NAME), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        for name, cols in DUMP_TABLES.items():
            if name in tables:
                dump[name] = con.execute(f"SELECT {cols} FROM {name} ORDER BY ALL").fetchall()
    finally:
        con.close()
    pq_dir = out_dir / "parquet"
    files = sorted(pq_dir.rglob("*")) if pq_dir.exists() else []
    for f in files:
        if f.is_file():
            rel = f.relative_to(out_dir).as_posix()
            table = pq.read_table(f, partitioning=None)
            dump[rel] = {
                "schema": str(table.schema.remove_metadata()),
                "rows": table.to_pylist(),
                "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            }
    return dump
