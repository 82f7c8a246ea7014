"""Shared fixtures: a private HMAC key folder and a small generated log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokencensus.settings import get_settings

SHARED = get_settings().shared


@pytest.fixture(autouse=True)
def _private_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep generated HMAC keys out of the real home folder."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "config"))


@pytest.fixture(scope="session")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo log (3,000 requests over 6 weeks), generated once per session."""
    from tokencensus import demo

    folder = tmp_path_factory.mktemp("demo-input")
    return demo.generate(folder, n_requests=3000, weeks=6, seed=7)


def split_demo(folder: Path, n: int, files: int, seed: int, weeks: int = 6) -> list[Path]:
    """A generated OpenRouter-style log of ``n`` requests cut into ``files`` JSONL files."""
    import gzip
    import math

    from tokencensus import demo

    folder.mkdir(parents=True, exist_ok=True)
    src = demo.generate(folder / "_gen", n_requests=n, weeks=weeks, seed=seed)
    with gzip.open(src, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines(True)
    per = math.ceil(len(lines) / files)
    paths = []
    for i in range(files):
        p = folder / f"log-{i}.jsonl"
        p.write_text("".join(lines[i * per : (i + 1) * per]), encoding="utf-8")
        paths.append(p)
    return paths


def require_shared() -> Path:
    """The shared data folder, or skip (fail under CI, where it must exist)."""
    if not SHARED.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data folder {SHARED} missing in CI")
        pytest.skip(f"shared data folder {SHARED} not found")
    return SHARED
