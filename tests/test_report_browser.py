"""The HTML report in a real headless Chromium: every chart renders, offline, fast, small."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tokencensus import analyse, pipeline, report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MAX_BYTES = 5 * 1024 * 1024
MAX_LOAD_S = 2.0

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed")


@pytest.fixture(scope="module")
def report_html(demo_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the small demo log, run through the real pipeline (keyword backend)."""
    out = tmp_path_factory.mktemp("browser-out")
    result = pipeline.run([demo_log], pipeline.RunOptions(out=out, rate=0.2, classifier="keyword"))
    assert result.report_path is not None and result.report_path.exists()
    return result.report_path


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, html: Path):
    """Load ``html`` and wait for every chart; return (page, load seconds, console errors, urls)."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    urls: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: urls.append(r.url))

    def guard(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", guard)
    t0 = time.perf_counter()
    page.goto(html.as_uri(), wait_until="load")
    page.wait_for_function(
        "window.__charts && window.__charts.rendered + window.__charts.errors.length"
        " >= window.__charts.total",
        timeout=15_000,
    )
    return page, time.perf_counter() - t0, errors, urls


def test_report_renders_offline_small_and_fast(browser, report_html: Path, tmp_path: Path) -> None:
    size = report_html.stat().st_size
    assert size < MAX_BYTES, f"report is {size:,} bytes"
    page, seconds, errors, urls = _open(browser, report_html)
    state = page.evaluate("window.__charts")
    assert state["errors"] == []
    assert state["total"] >= 10
    assert state["rendered"] == state["total"]
    ids = page.evaluate("Array.from(document.querySelectorAll('div.chart')).map(d => d.id)")
    assert len(ids) == state["total"]
    for cid in ids:
        assert page.locator(f"#{cid} svg").count() >= 1, f"chart {cid} has no SVG"
    assert errors == []
    assert urls and all(u == report_html.as_uri() for u in urls), urls
    # Time to every chart drawn; a busy test machine gets two more tries (best one counts).
    tries = [seconds]
    while min(tries) >= MAX_LOAD_S and len(tries) < 3:
        p2, t2, _, _ = _open(browser, report_html)
        p2.close()
        tries.append(t2)
    assert min(tries) < MAX_LOAD_S, f"load took {tries} s"
    # Screenshots of every chart, for a person to look at.
    shots = [tmp_path / "shots"]
    if os.environ.get("TOKENCENSUS_SCREENSHOTS"):
        shots.append(Path(os.environ["TOKENCENSUS_SCREENSHOTS"]))
    shots[0].mkdir(parents=True, exist_ok=True)
    for cid in ids:
        target = shots[0] / f"{cid}.png"
        page.locator(f"#{cid}").screenshot(path=str(target))
        assert target.stat().st_size > 1000
        for extra in shots[1:]:
            extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(target, extra / target.name)
    text = page.inner_text("body")
    for heading in ("Method", "Privacy", "Classifier accuracy", "Data quality"):
        assert heading in text
    assert "Unknown models" in text and "acme/in-house-7b" in text
    page.close()


def test_report_size_does_not_grow_with_rows(browser, report_html: Path, tmp_path: Path) -> None:
    """The page holds aggregates only: no request id, user key or row-level field in it."""
    text = report_html.read_text(encoding="utf-8")
    out = report_html.parent
    con = analyse.open(out)
    ids = [r[0] for r in con.con.execute("SELECT request_id FROM requests LIMIT 200").fetchall()]
    users = [
        r[0]
        for r in con.con.execute(
            "SELECT DISTINCT user_key FROM requests WHERE user_key IS NOT NULL LIMIT 200"
        ).fetchall()
    ]
    con.close()
    assert not any(i in text for i in ids)
    assert not any(u in text for u in users)


def test_report_with_confusion_and_large_min_group(browser, report_html: Path, tmp_path: Path):
    """A confusion matrix adds the adjusted bars; a huge k suppresses and still renders."""
    out = report_html.parent
    census = analyse.open(out, min_group=10_000)
    path = report.write_report(census, tmp_path / "r.html")
    census.close()
    page, _, errors, _ = _open(browser, path)
    state = page.evaluate("window.__charts")
    assert state["errors"] == [] and errors == []
    assert state["rendered"] == state["total"]
    page.close()

    census = analyse.open(out, min_group=1)
    buckets = census.bucket_share()["primary_bucket"].tolist()
    import numpy as np

    conf = np.full((len(buckets), len(buckets)), 0.1 / max(len(buckets) - 1, 1))
    np.fill_diagonal(conf, 0.9)
    census.set_confusion({"buckets": buckets, "matrix": (conf * 200).round().tolist()}, "test")
    path = report.write_report(census, tmp_path / "r2.html")
    census.close()
    page, _, errors, _ = _open(browser, path)
    assert page.evaluate("window.__charts.errors") == [] and errors == []
    assert "adjusted for classifier error" in path.read_text(encoding="utf-8")
    page.close()
