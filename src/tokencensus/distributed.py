"""The same pipeline on Ray Data, for logs too big for one machine.

:func:`run_ray` runs the stages of :func:`tokencensus.pipeline.run` as Ray Data
operators over Arrow batches:

1. **read**: canonical Parquet files (every column of the request schema, no
   ``--map``) with ``ray.data.read_parquet``; every other format through the
   same readers as the local path (:func:`tokencensus.ingest.read`), whose
   batches go to the object store (``ray.data.from_arrow_refs``);
2. **prepare** (tasks): ``map_batches`` of :func:`prepare_batch` - user ids to
   keyed hashes, then the deterministic sample (:func:`tokencensus.sample.sample_batch`);
3. **classify** (an actor pool, ``concurrency=``): ``map_batches`` of
   :class:`ClassifyActor`, which loads the backend once per actor (behind the
   classification cache) and runs :func:`tokencensus.classify.classify_batch`
   and :func:`tokencensus.buckets.assign_batch` on the sampled rows;
4. **write**: Parquet of requests (no prompt text), predictions and assignments
   under ``OUT/_ray/``, which :meth:`tokencensus.store.Store.load_parquet` loads
   into the DuckDB store in one transaction; then the same catalogue, Parquet
   export and report steps as the local path, so ``tokencensus.open(OUT)`` reads
   the result and it is the same store the local path builds.

Ray is an optional dependency (``pip install tokencensus[ray]``). Files already
ingested are skipped and predictions come from the cache on a rerun; a run
killed before the load leaves the store as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from tokencensus import ingest, privacy, sample
from tokencensus.buckets import ASSIGNMENT_SCHEMA, Rules, assign_batch
from tokencensus.classify import PREDICTION_SCHEMA, classify_batch
from tokencensus.pipeline import (
    RunOptions,
    RunResult,
    build_classifier,
    finish_store,
    guarded,
    merge_reports,
    run_settings,
    scrub_errors,
    write_outputs,
)
from tokencensus.schema import REQUEST_SCHEMA, conform
from tokencensus.store import Store, source_name

STAGING = "_ray"
#: Columns added to the requests for ordering (first occurrence of an id wins, as locally).
ORDER_COLUMNS = ["_file", "_seq"]


def prepare_batch(batch: pa.Table, key: bytes, rate: float, salt: str, model_rates) -> pa.Table:
    """Stage 2, a Ray task per block: keyed user hashes, then the sample flag and weight."""
    table = privacy.hash_users_batch(batch, key)
    return sample.sample_batch(table, rate, salt, model_rates)


def requests_batch(batch: pa.Table) -> pa.Table:
    """The requests table's columns: metadata, ``has_prompt``; the prompt text dropped."""
    text = batch.column("prompt_text")
    has = pc.and_(pc.is_valid(text), pc.not_equal(pc.fill_null(text, ""), ""))
    has = pc.fill_null(has, False)
    keep = [c for c in batch.column_names if c != "prompt_text"]
    return batch.select(keep).append_column("has_prompt", has)


def to_classify(batch: pa.Table) -> pa.Table:
    """The rows the classifier sees: sampled, with prompt text."""
    mask = pc.and_(batch.column("sampled"), pc.is_valid(batch.column("prompt_text")))
    return batch.filter(pc.fill_null(mask, False)).select(["request_id", "prompt_text"])


class ClassifyActor:
    """Stage 3: one backend per actor (loaded once), behind the classification cache.

    Returns, per input row, its prediction and bucket assignment; no text."""

    def __init__(self, opts: RunOptions, out: str) -> None:
        self.classifier = build_classifier(opts, Path(out))
        self.rules = Rules.load(opts.rules)

    def __call__(self, batch: pa.Table) -> pa.Table:
        preds = scrub_errors(classify_batch(batch, self.classifier), batch)
        assigned = assign_batch(preds, self.rules)
        cols = {name: preds.column(name) for name in PREDICTION_SCHEMA.names}
        for name in ASSIGNMENT_SCHEMA.names[1:]:
            cols[name] = assigned.column(name)
        return pa.table(cols)


def _canonical_parquet(path: Path, opts: RunOptions) -> bool:
    """Whether ``path`` is Parquet already in the request schema (read by Ray directly)."""
    if opts.mapping or opts.format not in (None, "parquet") or opts.prompts_from:
        return False
    if not path.name.lower().endswith(".parquet"):
        return False
    try:
        names = set(pq.read_schema(path).names)
    except Exception:
        return False
    return set(REQUEST_SCHEMA.names) <= names


def _add_order(table: pa.Table, file_index: int, start: int, source: str) -> pa.Table:
    n = table.num_rows
    return (
        table.append_column("source_file", pa.array([source] * n, pa.string()))
        .append_column("_file", pa.array([file_index] * n, pa.int32()))
        .append_column("_seq", pa.array(range(start, start + n), pa.int64()))
    )


def _conform_parquet(batch: pa.Table, file_index: int, source: str) -> pa.Table:
    table = conform(batch)
    table = table.filter(pc.is_valid(table.column("request_id")))
    # a file's rows keep their order within a block; blocks are ordered by ``preserve_order``
    return _add_order(table, file_index, 0, source)


def run_ray(
    paths: list[str | Path],
    opts: RunOptions,
    console: Console | None = None,
    *,
    concurrency: int | None = None,
    batch_size: int | None = 4096,
    keep_staging: bool = False,
) -> RunResult:
    """Run the pipeline on Ray Data into ``opts.out`` (see the module docstring).

    ``concurrency`` is the classifier actor pool's size (default: the cluster's CPUs
    less one, at least one). Uses the running Ray cluster, or starts a local one.
    """
    return guarded(
        _run_ray,
        paths,
        opts,
        console or Console(stderr=True),
        concurrency=concurrency,
        batch_size=batch_size,
        keep_staging=keep_staging,
    )


def _run_ray(
    paths: list[str | Path],
    opts: RunOptions,
    console: Console,
    *,
    concurrency: int | None,
    batch_size: int | None,
    keep_staging: bool,
) -> RunResult:
    import ray
    import ray.data

    out = Path(opts.out)
    files = ingest.expand(paths)
    key = privacy.load_key(opts.key_file)
    rules = Rules.load(opts.rules)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    if concurrency is None:
        cpus = int(ray.cluster_resources().get("CPU", 2))
        concurrency = max(1, cpus - 1)

    probe = build_classifier(RunOptions(**{**opts.__dict__, "cache": False}), out)
    report = ingest.IngestReport()
    staging = out / STAGING
    with Store(out) as store:
        store.check_settings(run_settings(opts, rules, probe))
        close = getattr(probe, "close", None)
        if callable(close):
            close()
        todo = [p for p in files if not store.file_done(p)]
        for p in files:
            if p not in todo:
                console.print(f"[dim]skip {p} (already ingested)")
        reports: dict[int, ingest.IngestReport] = {}
        if todo:
            shutil.rmtree(staging, ignore_errors=True)
            parts = []
            for i, path in enumerate(todo):
                store.start_file(path)
                rep = reports[i] = ingest.IngestReport()
                name = source_name(path)
                if isinstance(path, Path) and _canonical_parquet(path, opts):
                    rep.format = "parquet"
                    ds = ray.data.read_parquet(str(path))
                    rep.rows = ds.count()  # from the Parquet metadata
                    ds = ds.select_columns(REQUEST_SCHEMA.names)
                    ds = ds.map_batches(
                        _conform_parquet,
                        batch_format="pyarrow",
                        fn_kwargs={"file_index": i, "source": name},
                    )
                    parts.append(ds)
                    continue
                refs, seq = [], 0
                batches = ingest.read(
                    [path], format=opts.format, mapping=opts.mapping, strict=opts.strict, report=rep
                )
                if opts.prompts_from:
                    from tokencensus.ingest.join import join_prompts

                    batches = join_prompts(batches, opts.prompts_from)
                for batch in batches:
                    table = (
                        pa.Table.from_batches([batch])
                        if isinstance(batch, pa.RecordBatch)
                        else batch
                    )
                    refs.append(ray.put(_add_order(table, i, seq, name)))
                    seq += table.num_rows
                if refs:
                    parts.append(ray.data.from_arrow_refs(refs))
            if parts:
                _run_stages(parts, opts, key, out, staging, concurrency, batch_size)
                store.load_parquet(
                    staging / "requests",
                    staging / "predictions",
                    staging / "assignments",
                    order_by=ORDER_COLUMNS,
                )
            for i, path in enumerate(todo):
                rep = reports[i]
                store.finish_file(path, rep.format, rep.rows, rep.rejects_table())
                merge_reports(report, rep)
            if not keep_staging:
                shutil.rmtree(staging, ignore_errors=True)
        summary = finish_store(store, opts)
    report_path = write_outputs(out, opts, None)
    return RunResult(out=out, summary=summary, report_path=report_path, ingest=report)


def _run_stages(
    parts: list[Any],
    opts: RunOptions,
    key: bytes,
    out: Path,
    staging: Path,
    concurrency: int,
    batch_size: int | None,
) -> None:
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    prepared = ds.map_batches(
        prepare_batch,
        batch_format="pyarrow",
        batch_size=batch_size,
        fn_kwargs={
            "key": key,
            "rate": opts.rate,
            "salt": opts.salt,
            "model_rates": opts.model_rates,
        },
    ).materialize()
    prepared.map_batches(requests_batch, batch_format="pyarrow").write_parquet(
        str(staging / "requests")
    )
    classified = (
        prepared.map_batches(to_classify, batch_format="pyarrow")
        .map_batches(
            ClassifyActor,
            batch_format="pyarrow",
            batch_size=batch_size,
            concurrency=concurrency,
            fn_constructor_kwargs={"opts": opts, "out": str(out)},
        )
        .materialize()
    )
    classified.select_columns(PREDICTION_SCHEMA.names).write_parquet(str(staging / "predictions"))
    classified.select_columns(ASSIGNMENT_SCHEMA.names).write_parquet(str(staging / "assignments"))


__all__ = ["run_ray", "prepare_batch", "requests_batch", "to_classify", "ClassifyActor"]
