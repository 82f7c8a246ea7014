"""The whole job, one way: ingest -> sample -> classify -> buckets -> store -> analyse -> report.

Each per-row stage is a function over Arrow batches (the same functions Ray
Data's ``map_batches`` runs in :mod:`tokencensus.distributed`). Files already
ingested are skipped and requests already classified are not classified
again, so a rerun after a crash or Ctrl-C resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tokencensus import ingest, privacy, sample
from tokencensus.buckets import Rules, assign_batch
from tokencensus.catalog import Catalog
from tokencensus.classify import Classifier, classify_batch, get_classifier
from tokencensus.store import Store


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
    preds = classify_batch(todo, classifier)
    assigned = assign_batch(preds, rules)
    return table, preds, assigned


def build_classifier(opts: RunOptions, out: Path) -> Classifier:
    """The configured backend, behind the text-free classification cache when enabled."""
    clf = get_classifier(opts.classifier, threshold=opts.threshold, **opts.classifier_options)
    if opts.cache:
        try:
            from tokencensus.classify.cache import CachedClassifier
        except ImportError:
            return clf
        return CachedClassifier(clf, out / "cache" / "classifications.sqlite")
    return clf


def run(paths: list[str | Path], opts: RunOptions, console: Console | None = None) -> RunResult:
    """Run the pipeline over ``paths`` into ``opts.out``; resumable and incremental."""
    console = console or Console(stderr=True)
    out = Path(opts.out)
    files = ingest.expand(paths)
    key = privacy.load_key(opts.key_file)
    rules = Rules.load(opts.rules)
    classifier = build_classifier(opts, out)
    report = ingest.IngestReport()
    with Store(out) as store:
        store.check_settings(
            {
                "rate": opts.rate,
                "salt": opts.salt,
                "rules": rules.name,
                "classifier": classifier.info().get("model_id", opts.classifier),
                "model_rates": sorted((opts.model_rates or {}).items()),
            }
        )
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            files_task = progress.add_task("files", total=len(files))
            for path in files:
                if store.file_done(path):
                    progress.console.print(f"[dim]skip {path} (already ingested)")
                    progress.advance(files_task)
                    continue
                store.start_file(path)
                file_report = ingest.IngestReport()
                rows_task = progress.add_task(f"{path.name}", total=None)
                batches = ingest.read(
                    [path],
                    format=opts.format,
                    mapping=opts.mapping,
                    strict=opts.strict,
                    report=file_report,
                )
                if opts.prompts_from:
                    from tokencensus.ingest.join import join_prompts

                    batches = join_prompts(batches, opts.prompts_from)
                for batch in batches:
                    req, preds, assigned = process_batch(
                        batch, opts, key, classifier, rules, store.classified_ids
                    )
                    store.write_batch(req, str(path), preds, assigned)
                    progress.advance(rows_task, batch.num_rows)
                store.finish_file(
                    path, file_report.format, file_report.rows, file_report.rejects_table()
                )
                merge_reports(report, file_report)
                progress.advance(files_task)
        models = [r[0] for r in store.con.execute("SELECT DISTINCT model FROM requests").fetchall()]
        store.set_catalog(Catalog(opts.catalog_dir).table([m for m in models if m]))
        summary = store.summary()
        store.export_parquet()
    report_path = None
    if opts.report:
        from tokencensus import analyse
        from tokencensus import report as report_mod

        census = analyse.open(out)
        census.export_tables()
        report_path = report_mod.write_report(census, out / "report.html", classifier=classifier)
        census.close()
    return RunResult(out=out, summary=summary, report_path=report_path, ingest=report)


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
