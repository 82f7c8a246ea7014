"""Third-party backends through the ``tokencensus.classifiers`` entry-point group."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from tokencensus.classify import (
    ENTRY_POINT_GROUP,
    Classifier,
    Prediction,
    available,
    get_classifier,
)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "tokencensus-example-plugin"
DIST = "tokencensus-example-plugin"


def _installed() -> bool:
    try:
        distribution(DIST)
    except PackageNotFoundError:
        return False
    return True


def test_builtin_backends_are_registered():
    names = set(available())
    assert {"google", "openai"} <= names


def test_plugin_found_through_entry_point_metadata(tmp_path, monkeypatch):
    """What an install does, without pip: a dist-info with entry_points.txt on sys.path."""
    dist_info = tmp_path / "tokencensus_example_plugin-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tokencensus-example-plugin\nVersion: 0.1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nexample = tokencensus_example_plugin:QuestionClassifier\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGIN))
    assert "example" in available()
    clf = get_classifier("example", threshold=0.5)
    assert isinstance(clf, Classifier) and clf.name == "example"
    preds = clf.predict(["What time is it in Tokyo?", "hello", ""])
    assert preds[0].labels == [("/Reference/Other", 0.8)]
    assert preds[1] == Prediction() and preds[2].error == "empty"
    assert clf.info() == {
        "name": "example",
        "model_id": "example-question-rules-1",
        "taxonomy": "v2",
    }


def test_unknown_backend_lists_installed():
    with pytest.raises(ValueError, match="installed: .*google"):
        get_classifier("no-such-backend")


def test_pip_installed_plugin_is_found(tmp_path):
    """The real thing: pip installs the example package, a fresh interpreter finds it."""
    was_installed = _installed()
    if not was_installed:
        base = [sys.executable, "-m", "pip", "install", "--no-deps", "-q"]
        base += ["--disable-pip-version-check"]
        # Offline first, with the venv's setuptools; else let pip fetch a build backend.
        proc = subprocess.run(
            [*base, "--no-build-isolation", "--no-index", "-e", str(PLUGIN)],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if proc.returncode != 0:
            proc = subprocess.run(
                [*base, "-e", str(PLUGIN)], capture_output=True, text=True, timeout=300
            )
        if proc.returncode != 0:
            pytest.fail(f"pip install failed:\n{proc.stdout}\n{proc.stderr}")
    try:
        code = (
            "from tokencensus.classify import get_classifier\n"
            "c = get_classifier('example')\n"
            "p = c.predict(['Will it rain tomorrow? Check the forecast.'])[0]\n"
            "print(type(c).__module__, p.labels[0][0])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["tokencensus_example_plugin", "/News/Weather"]
    finally:
        if not was_installed:
            subprocess.run(
                [sys.executable, "-m", "pip", "uninstall", "-y", "-q", DIST],
                capture_output=True,
                text=True,
                timeout=120,
            )


def test_docs_describe_the_interface():
    doc = (ROOT / "docs" / "backends.md").read_text(encoding="utf-8")
    for needle in (ENTRY_POINT_GROUP, "predict", "Prediction", "model_id", "tokencensus eval"):
        assert needle in doc
