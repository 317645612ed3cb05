"""Telling an interruption (Ctrl-C, SIGTERM) from a failure."""

from __future__ import annotations


def interruption(err: BaseException | None) -> BaseException | None:
    """The KeyboardInterrupt or Prefect TerminationSignal behind ``err``: ``err`` itself, or
    one it was raised while handling. A signal that lands inside a library's own error
    handling comes out as that library's error: SIGTERM inside MLflow's SQLite write made
    MLflow roll back and retry, find the database locked, and raise MlflowException with the
    TerminationSignal as its context. None when ``err`` is a failure."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt) or type(err).__name__ == "TerminationSignal":
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
