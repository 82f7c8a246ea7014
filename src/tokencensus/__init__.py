"""tokencensus: what your LLM traffic is for, measured honestly and privately."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def open(out_dir: str | Path, min_group: int | None = None):  # noqa: A001 - `tokencensus.open(DIR)`
    """Open a run's output folder; its methods return the study's tables as DataFrames.

    ``min_group`` is the smallest group (distinct users, and requests) a cell may show.
    """
    from tokencensus import analyse

    return analyse.open(Path(out_dir), min_group=min_group)
