"""Telling an interruption (Ctrl-C, SIGTERM) from a failure, and cleaning up after one."""

from __future__ import annotations

import traceback
from collections.abc import Iterator


def _behind(err: BaseException | None) -> Iterator[BaseException]:
    """``err``, then the errors it was raised from or while handling, each once."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def interruption(err: BaseException | None) -> BaseException | None:
    """The KeyboardInterrupt or Prefect TerminationSignal behind ``err``: ``err`` itself, or
    one it was raised while handling (its cause or context chain). An interruption can come
    out as another error: after a SIGTERM inside MLflow's SQLite write, closing the runs met
    the locked database (:func:`release_frames`) and raised MlflowException with the
    TerminationSignal as its context. None when ``err`` is a failure."""
    return next(
        (e for e in _behind(err) if isinstance(e, KeyboardInterrupt) or type(e).__name__ == "TerminationSignal"),
        None,
    )


def release_frames(err: BaseException) -> None:
    """Clear the local variables of the frames that ``err``, and the errors behind it, have
    left. A signal handler runs between two bytecodes, so SIGTERM can raise just after a
    SQLite query returned, with the query's statement still open in those frames: the
    database's read lock then lives as long as the error, and MLflow's next write in this
    process waited its 20 s busy timeout and failed with "database is locked" (reproduced).
    Frames still running are left as they are (``traceback.clear_frames`` skips them)."""
    for e in _behind(err):
        traceback.clear_frames(e.__traceback__)
