"""The whole job, one way: ingest -> sample -> classify -> buckets -> store -> analyse -> report.

Each per-row stage is a function over Arrow batches (the same functions Ray
Data's ``map_batches`` runs in :mod:`tokencensus.distributed`). Files already
ingested are skipped and requests already classified are not classified
again, so a rerun after a crash or Ctrl-C resumes where it stopped.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tokencensus import ingest, privacy, sample
from tokencensus.buckets import Rules, assign_batch
from tokencensus.catalog import Catalog
from tokencensus.classify import Classifier, classify_batch, get_classifier
from tokencensus.store import Store, source_name


@dataclass
class RunOptions:
    """Everything a run needs besides its inputs; plain values, like an estimator's params."""

    out: Path
    rate: float = 0.0025
    salt: str = "tokencensus-v1"
    model_rates: dict[str, float] | None = None
    format: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    strict: bool = False
    classifier: str = "local"
    classifier_options: dict = field(default_factory=dict)
    rules: str = "study"
    threshold: float = 0.5
    key_file: Path | None = None
    prompts_from: list[Path] = field(default_factory=list)
    catalog_dir: Path | None = None
    report: bool = True
    cache: bool = True
    #: Rows per committed batch (``None``: as the reader yields them, up to 65,536).
    #: Smaller batches lose less work to a crash and use less memory.
    batch_rows: int | None = None


@dataclass
class RunResult:
    out: Path
    summary: dict
    report_path: Path | None
    ingest: ingest.IngestReport


def process_batch(
    batch: pa.RecordBatch | pa.Table,
    opts: RunOptions,
    key: bytes,
    classifier: Classifier,
    rules: Rules,
    skip: Callable[[list[str]], set[str]] | None = None,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Hash users, sample, classify the sampled rows, assign buckets: (requests, predictions, assignments)."""
    table = privacy.hash_users_batch(batch, key)
    table = sample.sample_batch(table, opts.rate, opts.salt, opts.model_rates)
    todo = table.filter(pc.and_(table.column("sampled"), pc.is_valid(table.column("prompt_text"))))
    if skip is not None and todo.num_rows:
        done = skip(todo.column("request_id").to_pylist())
        if done:
            mask = pc.invert(pc.is_in(todo.column("request_id"), pa.array(list(done), pa.string())))
            todo = todo.filter(mask)
    preds = scrub_errors(classify_batch(todo, classifier), todo)
    assigned = assign_batch(preds, rules)
    return table, preds, assigned


def scrub_errors(preds: pa.Table, todo: pa.Table) -> pa.Table:
    """Withhold any backend error message that quotes its prompt (a server echoing the
    input), so no text reaches the store through ``assignments.error``."""
    errors = preds.column("error")
    if errors.null_count == len(errors):
        return preds
    texts = dict(
        zip(
            todo.column("request_id").to_pylist(),
            todo.column("prompt_text").to_pylist(),
            strict=True,
        )
    )
    ids = preds.column("request_id").to_pylist()
    fixed = [
        None if e is None else privacy.scrub(e, [texts.get(i)])
        for i, e in zip(ids, errors.to_pylist(), strict=True)
    ]
    return preds.set_column(
        preds.schema.get_field_index("error"), "error", pa.array(fixed, pa.string())
    )


class PipelineError(RuntimeError):
    """A failure whose original message was withheld because it quoted private text."""


def private_failure(exc: Exception, batch: pa.RecordBatch | pa.Table, where: str) -> Exception:
    """``exc``, or a :class:`PipelineError` in its place when its message quotes a prompt
    or a raw user id of ``batch`` (so it can be printed and logged safely)."""
    values: list[str | None] = []
    for col in ("prompt_text", "user_key"):
        if col in batch.schema.names:
            values.extend(batch.column(col).to_pylist())
    if privacy.echoes(str(exc), values):
        return PipelineError(f"{type(exc).__name__} while processing {where}: {privacy.WITHHELD}")
    return exc


def build_classifier(opts: RunOptions, out: Path) -> Classifier:
    """The configured backend, behind the text-free classification cache when enabled."""
    clf = get_classifier(opts.classifier, threshold=opts.threshold, **opts.classifier_options)
    if opts.cache:
        try:
            from tokencensus.classify.cache import CachedClassifier
        except ImportError:
            return clf
        path = out / "cache" / "classifications.sqlite"
        try:
            return CachedClassifier(clf, path)
        except sqlite3.DatabaseError:
            # A damaged cache (a disk that filled up, a copy cut short) is only lost
            # time: set it aside and start an empty one rather than refuse to run.
            for suffix in ("", "-wal", "-shm"):
                damaged = path.with_name(path.name + suffix)
                if damaged.exists():
                    os.replace(damaged, damaged.with_name(damaged.name + ".damaged"))
            return CachedClassifier(clf, path)
    return clf


def run(paths: list[str | Path], opts: RunOptions, console: Console | None = None) -> RunResult:
    """Run the pipeline over ``paths`` into ``opts.out``; resumable and incremental.

    Ctrl-C (or DuckDB's own interrupt) surfaces as :class:`KeyboardInterrupt`, with
    every committed batch kept: rerunning the same command resumes.
    """
    return guarded(_run, paths, opts, console or Console(stderr=True))


def guarded(fn: Callable[..., RunResult], *args: object, **kwargs: object) -> RunResult:
    """Call ``fn`` so that Ctrl-C surfaces as KeyboardInterrupt and a failure carries
    no private text in its traceback's local variables."""
    with _ctrl_c() as pressed:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            # Drop the failed frames' local variables (batches holding prompt text), so
            # a traceback printed with its locals (rich, typer) shows none of them.
            traceback.clear_frames(exc.__traceback__)
            if isinstance(exc, KeyboardInterrupt):
                raise
            # DuckDB turns a Ctrl-C inside a query into its own error ("Query
            # interrupted"); anything raised after Ctrl-C is the interrupt.
            if pressed["hit"] or isinstance(exc, duckdb.InterruptException):
                raise KeyboardInterrupt from None
            raise


@contextmanager
def _ctrl_c() -> Iterator[dict]:
    """Note whether Ctrl-C (SIGINT) arrived while the block ran; the previous handler
    still runs (by default it raises KeyboardInterrupt)."""
    state = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):  # Ctrl-C ignored here (a background job)
        yield state
        return

    def handler(signum: int, frame: object) -> None:
        state["hit"] = True
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(paths: list[str | Path], opts: RunOptions, console: Console) -> RunResult:
    out = Path(opts.out)
    files = ingest.expand(paths)
    key = privacy.load_key(opts.key_file)
    rules = Rules.load(opts.rules)
    classifier = build_classifier(opts, out)
    report = ingest.IngestReport()
    try:
        with Store(out) as store:
            store.check_settings(run_settings(opts, rules, classifier))
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,} rows"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                files_task = progress.add_task("files", total=len(files))
                for unit in ingest.units(paths, opts.format):
                    if all(not ingest.is_dsn(p) and store.file_done(p) for p in unit):
                        for p in unit:
                            progress.console.print(f"[dim]skip {p} (already ingested)")
                        progress.advance(files_task, len(unit))
                        continue
                    for p in unit:
                        store.start_file(p)
                    path = unit[0]
                    file_report = ingest.IngestReport()
                    rows_task = progress.add_task(f"{Path(str(path)).name}", total=None)
                    batches = ingest.read(
                        unit,
                        format=opts.format,
                        mapping=opts.mapping,
                        strict=opts.strict,
                        report=file_report,
                    )
                    if opts.prompts_from:
                        from tokencensus.ingest.join import join_prompts

                        batches = join_prompts(batches, opts.prompts_from)
                    for batch in rebatch(batches, opts.batch_rows):
                        try:
                            req, preds, assigned = process_batch(
                                batch, opts, key, classifier, rules, store.classified_ids
                            )
                        except Exception as exc:
                            safe = private_failure(exc, batch, source_name(path))
                            if safe is exc:
                                raise
                            raise safe from None
                        store.write_batch(req, str(path), preds, assigned)
                        progress.advance(rows_task, batch.num_rows)
                    for j, (p, rejects) in enumerate(unit_rejects(unit, file_report)):
                        rows = file_report.rows if j == 0 else 0
                        store.finish_file(p, file_report.format, rows, rejects)
                    merge_reports(report, file_report)
                    progress.advance(files_task, len(unit))
            summary = finish_store(store, opts)
        report_path = write_outputs(out, opts, classifier)
    finally:
        close = getattr(classifier, "close", None)
        if callable(close):
            close()
    return RunResult(out=out, summary=summary, report_path=report_path, ingest=report)


def unit_rejects(unit: list, report: ingest.IngestReport) -> list[tuple]:
    """Each file of a read unit (e.g. a batch input/output pair) with its own rejects."""
    table = report.rejects_table()
    if len(unit) == 1:
        return [(unit[0], table)]
    names = [str(p) for p in unit]
    files = table.column("file").to_pylist()
    out = []
    for j, p in enumerate(unit):
        keep = [f == names[j] or (j == 0 and f not in names) for f in files]
        out.append((p, table.filter(pa.array(keep, pa.bool_()))))
    return out


def run_settings(opts: RunOptions, rules: Rules, classifier: Classifier) -> dict:
    """What the store records in ``meta`` and refuses to mix across runs."""
    return {
        "rate": opts.rate,
        "salt": opts.salt,
        "rules": rules.name,
        "classifier": classifier.info().get("model_id", opts.classifier),
        "model_rates": sorted((opts.model_rates or {}).items()),
    }


def rebatch(
    batches: Iterator[pa.RecordBatch], rows: int | None
) -> Iterator[pa.RecordBatch | pa.Table]:
    """Cut the reader's batches to at most ``rows`` rows each (``None``: unchanged)."""
    for batch in batches:
        if not rows or batch.num_rows <= rows:
            yield batch
            continue
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def finish_store(store: Store, opts: RunOptions) -> dict:
    """The steps after ingest that rerun in full on every run (so a run killed in them
    heals on the next): the model catalogue, the Parquet export, a checkpoint."""
    models = [r[0] for r in store.con.execute("SELECT DISTINCT model FROM requests").fetchall()]
    store.set_catalog(Catalog(opts.catalog_dir).table(sorted(m for m in models if m)))
    summary = store.summary()
    store.export_parquet()
    store.checkpoint()
    return summary


def write_outputs(out: Path, opts: RunOptions, classifier: Classifier | None) -> Path | None:
    """Analysis tables and the HTML report (each file replaced whole, never half-written)."""
    if not opts.report:
        return None
    from tokencensus import analyse
    from tokencensus import report as report_mod

    census = analyse.open(out)
    try:
        census.export_tables()
        final = out / "report.html"
        tmp = out / ".report.html.tmp"
        report_mod.write_report(census, tmp, classifier=classifier)
        os.replace(tmp, final)
    finally:
        census.close()
    return final


def merge_reports(total: ingest.IngestReport, part: ingest.IngestReport) -> None:
    """Fold one file's ingest report into the run's."""
    formats = set(total.format.split(",")) | set(part.format.split(","))
    total.format = ",".join(sorted(f for f in formats if f))
    total.rows += part.rows
    total.rejects.update(part.rejects)
    total.reject_rows.extend(part.reject_rows[: ingest.MAX_SHOWN_REJECTS])
    for t in (part.first, part.last):
        if t is not None:
            total.first = t if total.first is None else min(total.first, t)
            total.last = t if total.last is None else max(total.last, t)
    total.models |= part.models
    total.multimodal_parts_skipped += part.multimodal_parts_skipped
