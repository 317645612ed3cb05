"""What ``pqfl run`` shows on stderr while it trains.

The flow logs one line per round on the ``pqfl.progress`` logger (method, round, mean and
worst AUROC, elapsed seconds). :func:`show_progress` prints those lines as ``[pqfl] ...``
and, when stderr is a terminal, keeps a progress bar under them. The bar counts client
rounds (every client trains and is evaluated once per round) over all methods, so it
moves in steps of one round's clients and its total is methods x rounds x clients.
Nothing is written to stdout, which stays free for the result table; when stderr is
not a terminal (a pipe, a log file, CI) only the plain lines are written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tasks.settings import RunConfig

LOGGER = "pqfl.progress"
# The flow's per-round line, its resume line, and the line of a method finished before a resume.
_ROUND = re.compile(r"^(?P<method>\S+)\s+round\s+(?P<round>\d+)/(?P<rounds>\d+)\s+mean AUROC")
_RESUMED = re.compile(r"^(?P<method>\S+)\s+resuming after round\s+(?P<round>\d+)/(?P<rounds>\d+)")
_DONE = re.compile(r"^(?P<method>\S+)\s+finished before the resume")


class _ProgressHandler(logging.Handler):
    """Writes each ``pqfl.progress`` record as a line and advances the bar from it."""

    def __init__(self, cfg: RunConfig, console: Console, progress: Progress):
        super().__init__(logging.INFO)
        self.console, self.progress = console, progress
        self.clients = len(cfg.clients)
        self.rounds = cfg.federation.rounds
        self.methods = list(cfg.federation.methods)
        self.done: dict[str, int] = {m: 0 for m in self.methods}  # rounds finished per method
        self.bar = progress.add_task(
            self._describe(self.methods[0], 0), total=len(self.methods) * self.rounds * self.clients
        )
        self.setFormatter(logging.Formatter("[pqfl] %(message)s"))

    def _describe(self, method: str, k: int) -> str:
        index = self.methods.index(method) + 1 if method in self.methods else 0
        return f"{method} {index}/{len(self.methods)}, round {k}/{self.rounds}"

    def _advance(self, method: str, k: int) -> None:
        if method not in self.done:
            return
        self.done[method] = max(self.done[method], min(k, self.rounds))
        self.progress.update(
            self.bar,
            completed=sum(self.done.values()) * self.clients,
            description=self._describe(method, self.done[method]),
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if match := (_ROUND.match(message) or _RESUMED.match(message)):
                self._advance(match["method"], int(match["round"]))
            elif match := _DONE.match(message):
                self._advance(match["method"], self.rounds)
            # Through the progress console, so a live bar is redrawn below the line.
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # a display problem must never stop training
            self.handleError(record)


@contextmanager
def show_progress(cfg: RunConfig, stream: IO[str] | None = None) -> Iterator[None]:
    """Show the per-round lines (and, on a terminal, a progress bar) while the block runs."""
    console = Console(file=stream or sys.stderr, highlight=False)
    progress = Progress(
        TextColumn(r"\[pqfl] {task.description}"),  # escaped: [pqfl] would read as rich markup
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("client rounds"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,  # the bar disappears at the end; the per-round lines stay
        disable=not console.is_terminal,
    )
    logger = logging.getLogger(LOGGER)
    handler = _ProgressHandler(cfg, console, progress)
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with progress:
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
