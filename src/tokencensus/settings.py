"""Settings from the environment (``TOKENCENSUS_*``) with plain defaults.

The shared data folder is found through ``TOKENCENSUS_SHARED`` (default
``../shared`` beside the project root); nothing in it is copied into outputs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"


def _default_shared() -> Path:
    # src/tokencensus -> project root -> its parent holds shared/
    return PACKAGE_DIR.parent.parent.parent / "shared"


class Settings(BaseSettings):
    """Process-wide settings; every field can be set as ``TOKENCENSUS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TOKENCENSUS_")

    shared: Path = _default_shared()
    rate: float = 0.0025
    salt: str = "tokencensus-v1"
    threshold: float = 0.5
    classifier: str = "local"
    rules: str = "study"
    batch_size: int = 8192
    min_group: int = 10


def get_settings() -> Settings:
    """Fresh settings each call, so tests can change the environment."""
    return Settings()
