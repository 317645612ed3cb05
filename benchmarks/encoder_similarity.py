"""Do clients learn the same encoder? The trained encoders of ``fedenc`` and of its control
``local_enc``, compared between clients on the gap ladder's fleets (issue 19).

If the encoders that clients train alone pointed the same way, the rows would hold a
common representation worth sharing; if they are unrelated, averaging them gives each
client a start that is nobody's. Per (rung, seed, method): the mean and smallest cosine
similarity of the clients' A matrices (flattened) between pairs of clients, their RMS
entry, and the test AUROC. Same config and budget as ``benchmarks.gap_decomposition``.
Library only. Usage:

    .venv/bin/python -m benchmarks.encoder_similarity [--seeds 0,1,2,3,4] [--rungs identical,today]
        [--out benchmarks/reports/encoder_similarity]
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.gap_decomposition import RUNGS, config
from pqfl.compile_cache import enable_persistent_cache
from pqfl.config import parse_config
from pqfl.federated.rounds import run_federation
from pqfl.fleet import prepare

METHODS = ("local_enc", "fedenc")


def cosines(encoders: list[np.ndarray]) -> list[float]:
    """Cosine similarity of every pair of (flattened) encoders."""
    flat = [np.ravel(a) for a in encoders]
    return [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in combinations(flat, 2)]


def run(rungs, seeds, rounds: int = 20, epochs: int = 10, batch: int = 16, lam: float = 0.01) -> pd.DataFrame:
    rows = []
    for rung in rungs:
        for seed in seeds:
            cfg = parse_config(config(rung, seed, rounds, epochs, batch, lam))
            fleet = prepare(cfg)
            for method in METHODS:
                result = run_federation(fleet, method, cfg.federation, simulator=cfg.simulator)
                encoders = [st.enc for ((st, _),) in result.members]
                cos = cosines(encoders)
                rows.append({"rung": rung, "seed": seed, "method": method, "mean_auroc": result.summary.mean_auroc,
                             "mean_cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos)),
                             "rms_entry": float(np.mean([np.sqrt(np.mean(a**2)) for a in encoders]))})  # fmt: skip
                print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
                      flush=True)  # fmt: skip
    return pd.DataFrame(rows)


def report(frame: pd.DataFrame) -> str:
    lines = [
        f"Seeds {', '.join(map(str, sorted(frame.seed.unique())))}; means over seeds.",
        "",
        "| rung | method | mean AUROC | mean pairwise cosine of A | smallest pairwise cosine | RMS entry of A |",
        "|---|---|---|---|---|---|",
    ]
    for (rung, method), part in frame.groupby(["rung", "method"], sort=False):
        lines.append(
            f"| {rung} | {method} | {part.mean_auroc.mean():.3f} | {part.mean_cosine.mean():+.2f} | "
            f"{part.min_cosine.mean():+.2f} | {part.rms_entry.mean():.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--rungs", default="identical,today")
    ap.add_argument("--out", default="benchmarks/reports/encoder_similarity")
    args = ap.parse_args(argv)
    rungs = args.rungs.split(",")
    if unknown := [r for r in rungs if r not in RUNGS]:
        raise SystemExit(f"--rungs: unknown {unknown}; choose from {', '.join(RUNGS)}")
    enable_persistent_cache()
    frame = run(rungs, [int(s) for s in args.seeds.split(",")])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    text = report(frame)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
