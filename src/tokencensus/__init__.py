"""tokencensus: what your LLM traffic is for, measured honestly and privately."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def open(out_dir: str | Path):  # noqa: A001 - the public API is `tokencensus.open(DIR)`
    """Open a run's output folder; its methods return the study's tables as DataFrames."""
    from tokencensus.analyse import Census

    return Census(Path(out_dir))
