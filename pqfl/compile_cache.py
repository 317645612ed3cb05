"""JAX's persistent compilation cache, kept in the user's cache folder.

Compiled circuits are reused across runs and across worker processes instead of being
recompiled. The folder is ``PQFL_CACHE_DIR`` when set, else ``pqfl/jax`` under
``XDG_CACHE_HOME`` (``~/.cache`` by default), so an installed pqfl never writes into its
own package folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pqfl" / "jax"


def enable_persistent_cache(path: str | os.PathLike | None = None) -> Path:
    folder = Path(path or os.environ.get("PQFL_CACHE_DIR") or default_dir())
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
