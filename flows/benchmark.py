"""The benchmark flow ``pqfl-benchmark`` (nightly deployment ``pqfl-nightly-benchmark``).

A suite (YAML, see ``pqfl.benchmark.suite.Suite``) names datasets, objectives, quantum
methods and seeds. For every dataset × objective × seed (× sweep value) a
``pqfl-benchmark-case`` subflow runs each quantum method through the training flow's
``pqfl-method`` subflow and the scikit-learn references (``pqfl.baselines``) on the same
client splits. The flow then tabulates mean ± std over seeds, PQFL's relative change and
its per-seed paired difference (with a paired-t interval) against every other method,
draws the plots, writes a markdown report and logs it all to one MLflow parent run of
the benchmark's experiment; the method runs are nested under it.

This module is the orchestration and the MLflow logging only; the suite, the statistics,
the report and the plots are plain library code (``pqfl.benchmark``, ``pqfl.plots``).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.runners import task_runner_for
from flows.tracking import PARENT_TAG, Tracker
from flows.train import train_method
from pqfl.baselines import DETECTORS, run_baselines
from pqfl.benchmark.report import build_report, display_table, json_rows
from pqfl.benchmark.statistics import (
    METRICS,
    case_record,
    paired_difference,
    per_seed_table,
    pyod_reference,
    relative_change,
    summary_table,
)
from pqfl.benchmark.suite import Case, Suite, resolve_source
from pqfl.plots import benchmark_convergence_plot, client_bars_plot, pooled_roc_pr_plot, sweep_plot
from tasks.federated import prepared_fleet
from tasks.settings import check_run_suite, parse_run_config

log = logging.getLogger("pqfl.progress")


@task(name="classical-references", cache_policy=NO_CACHE)
def classical_references(config: dict, baselines: list[str] | None) -> dict:
    """scikit-learn references on the very client splits the quantum methods use."""
    cfg = parse_run_config(config)
    fleet = prepared_fleet(cfg)  # the fleet the case's methods trained on, not prepared again
    refs = run_baselines(
        fleet.datas, fleet.stats, cfg.federation.objective, cfg.federation.seed, baselines, fleet.clients
    )
    return {"baselines": refs, "y_test": [d.y_test for d in fleet.datas], "clients": [d.name for d in fleet.datas]}


@flow(name="pqfl-benchmark-case", flow_run_name="{case.dataset}-{case.objective}-seed{case.seed}")
def benchmark_case(case: Case, baselines: list[str] | None) -> dict:
    """One dataset × objective × seed: every quantum method, then the classical references."""
    cfg = parse_run_config(case.config)
    method_flow = train_method.with_options(task_runner=task_runner_for(cfg.runner))
    # This subflow's own run id keys the methods' MLflow runs and checkpoints: unique per case.
    quantum = [method_flow(case.config, m, str(flow_run.id)) for m in cfg.federation.methods]
    refs = classical_references(case.config, baselines)
    return {"quantum": quantum, **refs}


def _log_benchmark(
    tracker: Tracker,
    run_id: str,
    suite: Suite,
    suite_path: str,
    table: pd.DataFrame,
    frame: pd.DataFrame,
    report: str,
    payload: dict,
    plot_dir: Path,
) -> None:
    client = tracker.client
    ts = int(time.time() * 1000)
    metrics = [  # e.g. "cardio/supervised/pqfl/mean_auroc"; MLflow keys allow only \w - . / and spaces
        Metric(re.sub(r"[^\w\-./ ]", "_", f"{d}/{o}/{m}/{k}"), float(row[k]), ts, 0)
        for (d, o, m), row in table.set_index(["dataset", "objective", "method"]).iterrows()
        for k in (*METRICS, "mean_auroc_std")
    ]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start : start + 500])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "suite.yaml").write_text(Path(suite_path).read_text())
        (tmp / "report.md").write_text(report)
        table.to_csv(tmp / "summary.csv", index=False)
        frame.to_csv(tmp / "results_per_seed.csv", index=False)
        (tmp / "benchmark.json").write_text(json.dumps(payload, indent=2))
        for name in ("suite.yaml", "report.md", "summary.csv", "results_per_seed.csv", "benchmark.json"):
            client.log_artifact(run_id, str(tmp / name))
    client.log_artifacts(run_id, str(plot_dir), "plots")


@flow(name="pqfl-benchmark")
def pqfl_benchmark(
    suite: str,
    data_dir: str | None = None,
    json_out: str | None = None,
    overrides: dict | None = None,
    seeds: list[int] | None = None,
) -> dict:
    """Run a benchmark suite (YAML file); returns ``{"rows": [...]}`` plus the report and run ids.

    ``data_dir`` is the folder relative file paths of the suite are read from (none for
    suites on data that ships with scikit-learn); ``overrides`` (dotted config paths) apply
    to every case, and ``seeds`` replace the suite's, e.g. for a smaller trial run. The
    markdown report is written beside ``json_out`` (same name, ``.md``) when given, and
    always logged to MLflow as ``report.md``.
    """
    started = time.perf_counter()
    spec, cases = check_run_suite(suite, data_dir, overrides, seeds)
    first = parse_run_config(cases[0].config)
    tracker = Tracker(first, str(flow_run.id))
    parent = tracker.client.create_run(
        tracker.experiment_id,
        run_name=f"benchmark-{spec.name}",
        tags={
            PARENT_TAG: "benchmark",
            "prefect.flow_run_id": str(flow_run.id),
            "git_commit": tracker.commit,
            "mlflow.source.git.commit": tracker.commit,
            "pqfl.suite": spec.name,
        },
    )
    run_id = parent.info.run_id
    params = {
        "suite": spec.name,
        "suite_file": str(suite),
        "data_dir": str(data_dir),
        "seeds": spec.seeds,
        "objectives": spec.objectives,
        "methods": spec.methods,
        "datasets": [d.name for d in spec.datasets],
        "baselines": spec.baselines or list(DETECTORS),
        "cases": len(cases),
    }
    tracker.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    records: list[dict] = []
    y_tests: dict[tuple, list] = {}
    try:
        for i, case in enumerate(cases, 1):
            t0 = time.perf_counter()
            out = benchmark_case(case, spec.baselines)
            for q in out["quantum"]:
                records.append(case_record(case, q, "quantum"))
                for key, value in (
                    ("mlflow.parentRunId", run_id),
                    ("pqfl.benchmark.dataset", case.dataset),
                    ("pqfl.benchmark.objective", case.objective),
                    ("pqfl.benchmark.seed", str(case.seed)),
                ):
                    tracker.client.set_tag(q["mlflow_parent_run_id"], key, value)
            for b in out["baselines"]:
                records.append(case_record(case, b, "classical", [c.test_scores for c in b["per_client"]]))
            y_tests[(case.dataset, case.objective, case.seed)] = out["y_test"]
            log.info(
                "benchmark %d/%d  %s  %s  seed %d  (%.1f s)",
                i,
                len(cases),
                case.dataset,
                case.objective,
                case.seed,
                time.perf_counter() - t0,
            )
        table = summary_table(records)
        frame = per_seed_table(records)
        ref_path = None
        if spec.pyod_reference:
            ref_path = Path(resolve_source(f"x:{spec.pyod_reference}", data_dir).removeprefix("x:"))
        pyod = (
            pyod_reference(ref_path, {d.name: d.pyod_name or d.name for d in spec.datasets})
            if "one_class" in spec.objectives
            else pd.DataFrame()
        )
        notes = []
        if ref_path is not None and pyod.empty:
            notes.append(f"PyOD reference {ref_path} not found or without matching rows: reference columns left out.")
        wall_s = time.perf_counter() - started
        paired = paired_difference(frame)
        report = build_report(spec, table, pyod, wall_s, notes, paired)
        payload = {
            "rows": json_rows(table),
            "suite": spec.name,
            "experiment": spec.experiment_name,
            "mlflow_run_id": run_id,
            "wall_s": wall_s,
            "relative_change": {
                metric: [
                    {"dataset": d, "objective": o, **{k: float(v) for k, v in row.items()}}
                    for (d, o), row in relative_change(table, metric).iterrows()
                ]
                for metric in ("mean_auroc", "mean_aupr", "mean_false_error")
            },
            "pyod_reference": [{"dataset": d, **r} for d, r in pyod.to_dict("index").items()],
            "paired_difference": paired.to_dict("records"),
        }
        with tempfile.TemporaryDirectory() as tmp:
            plot_dir = Path(tmp)
            _plots(spec, records, y_tests, frame, plot_dir, tracker, run_id)
            _log_benchmark(tracker, run_id, spec, suite, table, frame, report, payload, plot_dir)
        if json_out:
            out_path = Path(json_out)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.with_suffix(".md").write_text(report)
            payload["report"] = str(out_path.with_suffix(".md"))
            out_path.write_text(json.dumps(payload, indent=2))
        tracker.client.set_terminated(run_id, "FINISHED")
    except BaseException as err:
        tracker.client.set_tag(run_id, "pqfl.failure", f"{type(err).__name__}: {err}"[:4000])
        tracker.client.set_terminated(run_id, "FAILED")
        raise
    payload["table"] = display_table(table, pyod).to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
    payload["report_markdown"] = report
    return payload


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _plots(spec: Suite, records, y_tests, frame: pd.DataFrame, plot_dir: Path, tracker: Tracker, run_id: str) -> None:
    """Convergence, per-client bars and ROC/PR per dataset × objective; the sweep plot."""
    keys = list(dict.fromkeys((r["dataset"], r["objective"]) for r in records))
    for dataset, objective in keys:
        these = [r for r in records if r["dataset"] == dataset and r["objective"] == objective]
        title = f"{spec.name}: {dataset} ({objective})"
        slug = _slug(f"{dataset}_{objective}")
        (plot_dir / "convergence").mkdir(exist_ok=True)
        (plot_dir / "per_client").mkdir(exist_ok=True)
        (plot_dir / "roc_pr").mkdir(exist_ok=True)
        benchmark_convergence_plot(these, plot_dir / "convergence" / f"{slug}.png", title)
        client_bars_plot(these, plot_dir / "per_client" / f"{slug}.png", title)
        seed = min(r["seed"] for r in these)
        first = [r for r in these if r["seed"] == seed]
        pooled_roc_pr_plot(
            first,
            y_tests[(dataset, objective, seed)],
            plot_dir / "roc_pr" / f"{slug}_classical.png",
            f"{dataset} ({objective}, seed {seed})",
        )
        for r in first:  # the quantum methods' own ROC/PR, drawn by the training flow
            if r["kind"] == "quantum" and r["mlflow_run_id"]:
                with tempfile.TemporaryDirectory() as tmp:
                    local = tracker.client.download_artifacts(r["mlflow_run_id"], "plots/roc_pr.png", tmp)
                    Path(local).rename(plot_dir / "roc_pr" / f"{slug}_{r['method']}.png")
    if spec.sweep is not None:
        sweep_plot(frame, spec.sweep, plot_dir / f"sweep_{_slug(spec.sweep.name)}.png")
