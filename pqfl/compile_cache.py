"""JAX's persistent compilation cache, kept in the user's cache folder.

Compiled circuits are reused across runs and across worker processes instead of being
recompiled. The folder is ``PQFL_CACHE_DIR`` when set, else ``pqfl/jax`` under
``XDG_CACHE_HOME`` (``~/.cache`` by default), so an installed pqfl never writes into its
own package folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import threading
import time
from collections.abc import Callable, Hashable
from functools import lru_cache
from pathlib import Path

import jax
import numpy as np

try:
    import fcntl
except ImportError:  # Windows: processes do not wait for each other
    fcntl = None


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pqfl" / "jax"


def cache_folder() -> Path:
    """pqfl's cache folder: ``PQFL_CACHE_DIR`` when set, else :func:`default_dir`."""
    return Path(os.environ.get("PQFL_CACHE_DIR") or default_dir())


def enable_persistent_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled circuits in ``path`` (default: ``PQFL_CACHE_DIR``, else ``pqfl/jax`` in
    the user's cache folder) so that later processes load them instead of tracing and
    compiling again; returns the folder. ``pqfl run`` turns it on; library users opt in once
    per process, as with JAX's own cache, before the first fit. The numbers are the same
    either way (docs/library.md has the three-client example's times)."""
    folder = Path(path) if path else cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


# --- compiled functions kept across processes -------------------------------------------

#: How long a process waits for another one preparing the same function before it prepares
#: the function itself (the holder may be stuck; a crashed holder's lock is released at once).
LOCK_WAIT_S = 600.0


@contextlib.contextmanager
def _exclusive(path: Path | None):
    """Hold an advisory lock named for ``path`` (the export's file) while a function is
    traced, stored and compiled, so that processes starting together (Dask workers, a
    process pool, two runs) prepare each function once: the others wait, then load the
    stored export and get XLA's compile from JAX's cache. Without ``fcntl`` (Windows), on a
    cache folder that cannot be written or locked, or after :data:`LOCK_WAIT_S`, it does
    not wait; each process then prepares the function itself, as before, with the same
    numbers."""
    if path is None or fcntl is None:
        yield
        return
    lock = path.parent.parent / "locks" / f"{path.stem}.lock"  # beside the exports, not among them
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115  (closed below)
    except OSError:
        yield
        return
    with handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # another process holds it
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            except OSError:  # a file system without locks (some network mounts): do not wait
                break
        yield  # closing the file releases the lock


_STATS_LOCK = threading.Lock()
_STATS = {"traced": 0, "loaded": 0, "seconds": 0.0}


def compile_stats() -> dict:
    """This process's compiled-function counts so far: ``traced`` (traced, lowered and
    stored), ``loaded`` (read back from the folder, no tracing) and the ``seconds`` spent
    preparing and compiling them, waiting for another process's preparation included; a
    run logs the difference over its own training."""
    with _STATS_LOCK:
        return dict(_STATS)


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """What the stored functions depend on: pqfl's source and the JAX stack's versions. A
    changed circuit or loss gets a new key instead of a stale function."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(path.relative_to(Path(__file__).parent).as_posix().encode())
        h.update(path.read_bytes())
    for module in ("jax", "jaxlib", "optax"):
        h.update(f"{module}={importlib.metadata.version(module)}".encode())
    h.update(f"x64={jax.config.jax_enable_x64} backend={jax.default_backend()}".encode())
    return h.hexdigest()


def _signature(leaves, treedef) -> tuple:
    return treedef, tuple((np.shape(x), np.result_type(x)) for x in leaves)


def _jit(call: Callable) -> Callable:
    """``call`` jitted with every argument placed on the default device, committed or not.

    A jitted function is lowered and compiled again when an argument's placement changes
    from uncommitted (a fresh ``jnp.asarray``, a NumPy array) to committed (a result of a
    compiled call), although the computation is the same: a training step, first called
    with fresh parameters and then with its own results, compiled twice. With the
    placement fixed, one compile serves both."""
    return jax.jit(call, in_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))


class PersistentFunction:
    """A jitted function traced once per circuit structure, for every process.

    The first call with a new signature traces ``fn``, lowers it with ``jax.export`` and,
    when the persistent cache is on, stores the serialized export under a key of ``name``,
    ``static`` (what the closure was built from, e.g. the circuit spec), the argument
    shapes and dtypes and :func:`_code_digest`. Later processes (another ``pqfl run``,
    another case of a benchmark suite, a Dask worker) deserialize it instead of tracing
    the circuit again; XLA's compile of it is then served by JAX's persistent cache. Every
    process calls the exported function, whether it traced or loaded it, so the numbers do
    not depend on the cache's state.

    Arguments and results are passed as flat lists of arrays (the export holds no pytree
    types); ``out_like(*args)`` gives a pytree with the result's structure. Concurrent
    first calls (client tasks on threads, or other processes on the same cache folder: see
    :func:`_exclusive`) wait for one preparation.
    """

    def __init__(self, fn: Callable, name: str, static: Hashable, out_like: Callable):
        self.fn, self.name, self.static, self.out_like = fn, name, static, out_like
        self._calls: dict = {}
        self._lock = threading.Lock()

    @property
    def signatures(self) -> int:
        """How many argument signatures this function was prepared (and compiled) for."""
        return len(self._calls)

    def __call__(self, *args):
        leaves, treedef = jax.tree.flatten(args)
        signature = _signature(leaves, treedef)
        prepared, out = self._calls.get(signature), None
        if prepared is None:
            with self._lock:
                prepared = self._calls.get(signature)
                if prepared is None:
                    started = time.perf_counter()
                    path = self._path(signature)
                    # another process preparing the same function finishes first; this one then loads it
                    with _exclusive(path):
                        call, traced = self._prepare(path, signature, treedef)
                        out = jax.block_until_ready(call(*leaves))  # compiled here, once
                    # the result's structure follows from the arguments', so it is worked out once too
                    prepared = self._calls[signature] = (call, jax.tree.structure(self.out_like(*args)))
                    with _STATS_LOCK:
                        _STATS["traced" if traced else "loaded"] += 1
                        _STATS["seconds"] += time.perf_counter() - started
        call, out_tree = prepared
        return jax.tree.unflatten(out_tree, call(*leaves) if out is None else out)

    def leaf_call(self, *args) -> Callable:
        """The compiled function ``self(*args)`` runs, on flat leaves: it takes
        ``jax.tree.leaves(args)`` and returns the leaves of the result. For a loop that calls
        it many times with arguments of one signature (a client's training steps), which then
        skips flattening, checking and rebuilding the trees around every call; the numbers are
        the same. ``self(*args)`` must have been called once with this signature."""
        leaves, treedef = jax.tree.flatten(args)
        return self._calls[_signature(leaves, treedef)][0]

    def _path(self, signature) -> Path | None:
        """Where the export for ``signature`` is kept; None when the persistent cache is off."""
        folder = jax.config.jax_compilation_cache_dir
        if not folder:
            return None
        key = hashlib.sha256(repr((self.name, self.static, signature, _code_digest())).encode()).hexdigest()
        return Path(folder) / "exported" / f"{self.name}-{key[:40]}.jaxexp"

    def _prepare(self, path: Path | None, signature, treedef) -> tuple[Callable, bool]:
        from jax import export

        if path is not None:
            if path.exists():
                try:
                    return _jit(export.deserialize(bytearray(path.read_bytes())).call), False
                except Exception:  # a truncated or foreign file: trace again and replace it
                    pass

        def flat(*leaves):
            return jax.tree.leaves(self.fn(*jax.tree.unflatten(treedef, leaves)))

        shapes = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in signature[1]]
        exported = export.export(jax.jit(flat))(*shapes)
        if path is not None:
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(exported.serialize())
                os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
            except OSError:  # a read-only or full cache folder costs the next process a trace, not this run
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        return _jit(exported.call), True
