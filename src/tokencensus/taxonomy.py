"""Google's content-category taxonomy (V2 by default, V1 optional)."""

from __future__ import annotations

from functools import lru_cache

from tokencensus.settings import DATA_DIR

VERSIONS = ("v2", "v1")


@lru_cache(maxsize=4)
def paths(version: str = "v2") -> tuple[str, ...]:
    """All category paths of ``version``, in Google's published order."""
    if version not in VERSIONS:
        raise ValueError(f"unknown taxonomy version {version!r}; expected one of {VERSIONS}")
    text = (DATA_DIR / f"google-content-categories-{version}.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


@lru_cache(maxsize=4)
def path_set(version: str = "v2") -> frozenset[str]:
    """The paths of ``version`` as a set, for validation."""
    return frozenset(paths(version))


def top_level(path: str) -> str:
    """``/Games/Roleplaying Games`` -> ``/Games``."""
    return "/" + path.strip("/").split("/")[0]
