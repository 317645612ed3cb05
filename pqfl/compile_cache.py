"""JAX's persistent compilation cache, kept in the project's cache folder.

Compiled circuits are reused across runs and across worker processes instead of being
recompiled. ``PQFL_CACHE_DIR`` overrides the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".cache" / "jax"


def enable_persistent_cache(path: str | os.PathLike | None = None) -> Path:
    folder = Path(path or os.environ.get("PQFL_CACHE_DIR") or DEFAULT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
