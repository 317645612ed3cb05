"""Whole-process walls of ``pqfl run`` for two checkouts, side by side in one session.

    python -m benchmarks.compare_trees OLD_TREE NEW_TREE [RUNS]

For each tree (a git worktree, e.g. ``git worktree add /tmp/old a81eade``), with this
environment's Python and dependencies: one default run from an empty compilation cache,
then RUNS warm default runs and RUNS warm ``--methods pqfl --rounds 1`` runs, each a fresh
process (``python -m flows.cli run``, the tree's own command) on a fresh MLflow store and
Prefect database (``benchmarks.e2e._command_env``).
Prints the walls, their medians, the before/after ratios, and whether every run of both
trees gave the same metrics.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.e2e import run_pqfl


def _run(tree: str, args: list[str], cache: Path, folder: Path) -> tuple[float, dict]:
    _, wall, result = run_pqfl(args, cache, folder, timeout=1800, tree=tree)
    methods = result["methods"]
    return wall, {m: {k: v for k, v in r.items() if k not in ("wall_s", "timings")} for m, r in methods.items()}


def compare(old: str, new: str, runs: int = 3) -> dict:
    out, metrics = {}, []
    with tempfile.TemporaryDirectory(prefix="pqfl-trees-") as tmp:
        for name, tree in (("before", old), ("after", new)):
            cache = Path(tmp) / f"cache-{name}"
            cold, m = _run(tree, [], cache, Path(tmp) / f"{name}-cold")
            metrics.append(m)
            warm, fixed = [], []
            for i in range(runs):
                wall, m = _run(tree, [], cache, Path(tmp) / f"{name}-warm-{i}")
                warm.append(wall)
                metrics.append(m)
                fixed.append(
                    _run(tree, ["--methods", "pqfl", "--rounds", "1"], cache, Path(tmp) / f"{name}-one-{i}")[0]
                )
            out[name] = {"cold_s": cold, "warm_s": warm, "one_round_s": fixed}
            print(
                f"{name}: cold {cold:.1f} s; warm {', '.join(f'{w:.1f}' for w in warm)} s; "
                f"one method one round {', '.join(f'{w:.1f}' for w in fixed)} s",
                flush=True,
            )
    for key in ("warm_s", "one_round_s"):
        before, after = statistics.median(out["before"][key]), statistics.median(out["after"][key])
        print(f"{key}: median {before:.1f} s -> {after:.1f} s, {before / after:.2f}x")
    print(f"cold_s: {out['before']['cold_s']:.1f} s -> {out['after']['cold_s']:.1f} s")
    out["metrics_identical"] = all(m == metrics[0] for m in metrics)
    print(f"every run of both trees gave the same metrics: {out['metrics_identical']}")
    return out


if __name__ == "__main__":
    compare(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3)
