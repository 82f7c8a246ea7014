"""The command line: ``tokencensus run|demo|ingest|classify|eval|train|report``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tokencensus.settings import get_settings

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False
)
err = Console(stderr=True)
out = Console()


def _fail(msg: str) -> None:
    err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def run(
    logs: Annotated[list[str], typer.Argument(help="Log files, globs or directories.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path(
        "tokencensus-out"
    ),
    rate: Annotated[float, typer.Option(help="Sampling rate (the study used 0.0025).")] = 0.0025,
    salt: Annotated[str, typer.Option(help="Sampling salt.")] = "tokencensus-v1",
    model_rate: Annotated[
        list[str] | None,
        typer.Option(
            "--model-rate",
            help="MODEL=RATE: sample MODEL at its own rate (repeatable; stratified, weighted 1/RATE).",
        ),
    ] = None,
    format: Annotated[str | None, typer.Option("--format", help="Force a log format.")] = None,
    map: Annotated[str | None, typer.Option("--map", help="canonical=source,...")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Classifier backend.")] = "local",
    rules: Annotated[str, typer.Option(help="Rule set name or TOML file.")] = "study",
    prompts_from: Annotated[
        list[Path] | None, typer.Option(help="A log holding the prompts.")
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help="HMAC key for user ids.")] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad record.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Google backend: print billable units and $ cost, send nothing."
        ),
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Skip the classification cache.")
    ] = False,
) -> None:
    """Logs in, report out: ingest, sample, classify, map, store, analyse, report."""
    from tokencensus import ingest, pipeline, sample

    try:
        opts = pipeline.RunOptions(
            out=out_dir,
            rate=rate,
            salt=salt,
            model_rates=sample.parse_model_rates(model_rate),
            format=format,
            mapping=ingest.parse_map(map),
            strict=strict,
            classifier=backend,
            rules=rules,
            key_file=key_file,
            prompts_from=list(prompts_from or []),
            cache=not no_cache,
        )
        if dry_run:
            _dry_run_logs(logs, opts)
            return
        t0 = time.perf_counter()
        result = pipeline.run(logs, opts, console=err)
    except (ingest.IngestError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: rerun the same command to resume where it stopped")
        raise typer.Exit(130) from None
    s = result.summary
    err.print(
        f"[green]done[/green] in {time.perf_counter() - t0:.1f}s: {s['requests']:,} requests, "
        f"{s['sampled']:,} sampled, {s['classified']:,} classified, {s['rejects']:,} rejects"
    )
    if result.report_path:
        out.print(str(result.report_path))


def _dry_run_logs(logs: list[str], opts) -> None:
    """Price the sampled prompts of ``logs`` at Google's published rates; nothing is sent."""
    import pyarrow.compute as pc

    from tokencensus import ingest, sample
    from tokencensus.classify import prompt_window
    from tokencensus.classify.google import describe_estimate, estimate_cost

    texts: list[str] = []
    for batch in ingest.read(logs, format=opts.format, mapping=opts.mapping, strict=opts.strict):
        t = sample.sample_batch(batch, opts.rate, opts.salt, opts.model_rates)
        t = t.filter(pc.and_(t.column("sampled"), pc.is_valid(t.column("prompt_text"))))
        texts.extend(prompt_window(x) for x in t.column("prompt_text").to_pylist())
    out.print(describe_estimate(estimate_cost(texts)), soft_wrap=True)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-out"),
    requests: Annotated[int, typer.Option(help="Requests to generate.")] = 200_000,
    weeks: Annotated[int, typer.Option(help="Weeks to cover.")] = 26,
    rate: Annotated[float, typer.Option(help="Sampling rate for the demo run.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    backend: Annotated[str, typer.Option("--backend")] = "local",
) -> None:
    """Generate the bundled demo log into OUT/input and run the pipeline on it."""
    from tokencensus import demo as demo_mod
    from tokencensus import pipeline

    t0 = time.perf_counter()
    log = demo_mod.generate(
        out_dir / "input", n_requests=requests, weeks=weeks, seed=seed, console=err
    )
    err.print(f"demo log: {log}")
    opts = pipeline.RunOptions(out=out_dir, rate=rate, classifier=backend)
    result = pipeline.run([log], opts, console=err)
    s = result.summary
    err.print(
        f"[green]done[/green] in {time.perf_counter() - t0:.1f}s: {s['requests']:,} requests, "
        f"{s['classified']:,} classified"
    )
    out.print(str(result.report_path))


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Log files, globs or directories.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    format: Annotated[str | None, typer.Option("--format")] = None,
    map: Annotated[str | None, typer.Option("--map")] = None,
    strict: Annotated[bool, typer.Option()] = False,
) -> None:
    """Read logs, detect their format, and summarise what was read and rejected."""
    from tokencensus import ingest as ing

    report = ing.IngestReport()
    try:
        for _ in ing.read(
            paths, format=format, mapping=ing.parse_map(map), strict=strict, report=report
        ):
            pass
    except ing.IngestError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(report.to_json()))
        return
    t = Table(title="ingest", show_header=False)
    for k, v in report.to_json().items():
        if k == "models":
            v = f"{len(v)}: " + ", ".join(v[:10]) + (" …" if len(v) > 10 else "")
        t.add_row(k, str(v))
    out.print(t)
    if report.reject_rows:
        rt = Table(title=f"first {min(20, len(report.reject_rows))} rejects")
        for c in ("file", "line", "reason", "detail"):
            rt.add_column(c)
        for r in report.reject_rows[:20]:
            rt.add_row(r["file"], str(r["line"]), r["reason"], r["detail"])
        out.print(rt)


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help="Text to classify ('-' reads standard input).")],
    backend: Annotated[str, typer.Option("--backend")] = "local",
    rules: Annotated[str, typer.Option()] = "study",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Google backend: print the cost, send nothing.")
    ] = False,
) -> None:
    """Classify one text: content-category paths, confidences, bucket."""
    from tokencensus.buckets import Rules
    from tokencensus.classify import get_classifier, prompt_window

    if text == "-":
        text = sys.stdin.read()
    if dry_run:
        from tokencensus.classify.google import describe_estimate, estimate_cost

        out.print(describe_estimate(estimate_cost([prompt_window(text)])), soft_wrap=True)
        return
    try:
        clf = get_classifier(backend, threshold=get_settings().threshold)
        pred = clf.predict([prompt_window(text)])[0]
        assigned = Rules.load(rules).assign(pred.labels, pred.bucket_scores)
    except ValueError as exc:
        _fail(str(exc))
        return
    if as_json:
        print(
            json.dumps(
                {
                    "labels": pred.labels,
                    "bucket_scores": pred.bucket_scores,
                    "error": pred.error,
                    **assigned,
                }
            )
        )
        return
    t = Table("path", "confidence")
    for p, c in pred.labels:
        t.add_row(p, f"{c:.2f}")
    out.print(t if pred.labels else "[dim]no category above the threshold[/dim]")
    conf = assigned["confidence"]
    out.print(
        f"bucket: [bold]{assigned['primary_bucket']}[/bold]"
        + (f" ({conf:.2f}, by {assigned['decided_by']})" if conf is not None else "")
    )


@app.command("eval")
def eval_cmd(
    labels: Annotated[Path, typer.Argument(help="Labelled JSONL (the ../shared/labels format).")],
    backend: Annotated[str, typer.Option("--backend")] = "local",
    rules: Annotated[str, typer.Option()] = "study",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Measure a backend against labelled prompts: accuracy, per-bucket F1, share error, ECE, speed."""
    from tokencensus import evaluate
    from tokencensus.buckets import Rules
    from tokencensus.classify import get_classifier

    try:
        records = evaluate.load_labels(labels)
        clf = get_classifier(backend, threshold=get_settings().threshold)
        result = evaluate.evaluate(records, clf, Rules.load(rules))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    if as_json:
        print(json.dumps(result))
        return
    out.print(
        f"records: {len(records)}   primary accuracy: {result['primary_accuracy']:.3f}   "
        f"macro-F1: {result['macro_f1']:.3f}   ECE: {result['ece']:.3f}   "
        f"{result['prompts_per_second']:,.0f} prompts/s"
    )
    t = Table("bucket", "precision", "recall", "F1", "support", "share error (pp)")
    for b, m in result["per_bucket"].items():
        t.add_row(
            b,
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['f1']:.3f}",
            str(m["support"]),
            f"{result['share_error_pp'].get(b, 0):.2f}",
        )
    out.print(t)


@app.command()
def train(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write the model.")] = None,
    shared: Annotated[Path | None, typer.Option(help="The shared data folder.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    minilm: Annotated[
        bool | None, typer.Option("--minilm/--no-minilm", help="Also fit the slower MiniLM heads.")
    ] = None,
    loso: Annotated[
        bool, typer.Option("--loso/--no-loso", help="Measure leave-one-source-out accuracy.")
    ] = True,
) -> None:
    """Train the default classifier from ../shared/labels (needs the `train` extra)."""
    from tokencensus import train as train_mod
    from tokencensus.settings import DATA_DIR

    metrics = train_mod.train(
        shared or get_settings().shared,
        out_dir or DATA_DIR / "model",
        seed=seed,
        minilm=minilm,
        loso=loso,
    )
    out.print_json(json.dumps(metrics, default=str))


@app.command()
def report(
    out_dir: Annotated[Path, typer.Argument(help="A run's output folder.")],
) -> None:
    """Rebuild the HTML report and the tables of an existing run."""
    from tokencensus import analyse
    from tokencensus import report as report_mod

    try:
        census = analyse.open(out_dir)
    except FileNotFoundError as exc:
        _fail(str(exc))
        return
    census.export_tables()
    path = report_mod.write_report(census, out_dir / "report.html")
    census.close()
    out.print(str(path))


models_app = typer.Typer(help="Model metadata (author, origin, open weights).")
app.add_typer(models_app, name="models")


@models_app.command("build")
def models_build(
    source: Annotated[Path, typer.Argument(help="A folder like ../shared/models.")],
    out_dir: Annotated[Path | None, typer.Option("--out")] = None,
) -> None:
    """Build a catalogue snapshot from a model-metadata folder (use it with --catalog)."""
    from tokencensus import catalog

    n = catalog.build_snapshot(source, out_dir or catalog.SNAPSHOT_DIR)
    out.print(f"{n} models")


if __name__ == "__main__":  # pragma: no cover
    app()
