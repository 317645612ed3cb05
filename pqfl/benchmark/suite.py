"""A benchmark suite: its YAML schema, its expansion into cases, and its check before a run.

A suite (YAML, see :class:`Suite`) names datasets, objectives, quantum methods and seeds
on one base config. :func:`expand_cases` turns it into one :class:`Case` per dataset ×
objective × seed (× sweep value), each with its validated config; :func:`check_suite`
also prepares every dataset and partitions every case, so bad input fails before hours of
runs. Plain library code: the flow (``flows/benchmark.py``) and the tools under
``benchmarks/`` read suites through it without importing Prefect or MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pqfl.config import Config, parse_config, read_yaml
from pqfl.errors import PQFLInputError

Objective = Literal["supervised", "one_class"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetEntry(_Strict):
    """One dataset (or scenario) of a suite."""

    name: str = Field(min_length=1)
    # A source string (pqfl.data.sources); a relative path is taken relative to --data-dir.
    source: str
    # Dotted config overrides for this entry, e.g. {"dataset.max_samples": 1500}. A path
    # with ``*`` for the client index (clients.*.noise.depolarizing) applies to every client.
    overrides: dict[str, Any] = Field(default_factory=dict)
    # Overrides for one objective of this entry only (after the suite's objective_overrides),
    # e.g. settings chosen on validation for this dataset's one_class runs.
    objective_overrides: dict[Objective, dict[str, Any]] = Field(default_factory=dict)
    # Repeat the base fleet this many times (names get a -rN suffix): 5 profiles × 10 = 50 clients.
    replicate_clients: int = Field(default=1, ge=1)
    seeds: list[int] | None = Field(default=None, min_length=1)  # default: the suite's seeds
    pyod_name: str | None = None  # row of the PyOD reference table (default: name)


class Sweep(_Strict):
    """One parameter varied over values, e.g. the noise level of every client."""

    name: str = Field(min_length=1)
    values: list[float] = Field(min_length=1)
    paths: list[str] = Field(min_length=1)  # dotted config paths set to each value (``*`` = every client)


class Suite(_Strict):
    """A benchmark suite: datasets × objectives × methods × seeds on one base config."""

    name: str = Field(min_length=1)
    description: str = ""
    experiment: str | None = None  # MLflow experiment (default: pqfl-benchmark-NAME)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    objectives: list[Objective] = Field(default_factory=lambda: ["supervised"], min_length=1)
    methods: list[str] = Field(default_factory=lambda: ["pqfl", "fedavg", "local"], min_length=1)
    baselines: list[str] | None = None  # scikit-learn references (default: all of pqfl.baselines.DETECTORS)
    base: dict[str, Any]  # a pqfl config every case starts from (dataset.source comes from the entry)
    objective_overrides: dict[Objective, dict[str, Any]] = Field(default_factory=dict)
    datasets: list[DatasetEntry] = Field(min_length=1)
    sweep: Sweep | None = None
    # CSV of PyOD's published ROC-AUC (rows = datasets, a column per detector); relative to --data-dir.
    pyod_reference: str | None = None

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v):
        from pqfl.federated.strategies import STRATEGIES  # JAX: loaded once a suite file has been read

        if unknown := [m for m in v if m not in STRATEGIES]:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(STRATEGIES)}")
        return v

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, v):
        from pqfl.baselines import DETECTORS  # scikit-learn, as above

        if v is not None and (unknown := [b for b in v if b not in DETECTORS]):
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(DETECTORS)}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(
                f"datasets: names repeat ({sorted({n for n in names if names.count(n) > 1})}); name each entry once"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods: a method is listed twice; list each once")
        return self

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"pqfl-benchmark-{self.name}"


class Case(_Strict):
    """One cell of the suite: a dataset (at one sweep value) × objective × seed."""

    dataset: str
    entry: str
    objective: Objective
    seed: int
    sweep_value: float | None = None
    config: dict[str, Any]


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; bad input raises PQFLInputError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise PQFLInputError(f"--suite: file {path} not found; pass a suite YAML such as benchmarks/suites/odds.yaml")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise PQFLInputError(f"{path}: expected a YAML mapping with name, base and datasets")
    try:
        return Suite.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "required field is missing; add it to the suite"
        elif first["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling (pqfl/benchmark/suite.py: Suite)"
        raise PQFLInputError(f"{path}: {loc + ': ' if loc else ''}{msg}") from None


def resolve_source(source: str, data_dir: str | Path | None) -> str:
    """Put a relative path of a file-based source under ``data_dir``."""
    scheme, sep, rest = source.partition(":")
    if not sep or scheme == "sklearn" or data_dir is None:
        return source
    path, hash_, frag = rest.partition("#")
    if Path(path).is_absolute():
        return source
    return f"{scheme}:{Path(data_dir) / path}{hash_}{frag}"


def _expand(overrides: dict[str, Any], n_clients: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if ".*." in f".{key}.":
            for i in range(n_clients):
                out[key.replace("*", str(i), 1)] = value
        else:
            out[key] = value
    return out


def _case_config(
    suite: Suite, entry: DatasetEntry, objective: str, seed: int, sweep_value, data_dir, extra: dict[str, Any]
) -> Config:
    base = dict(suite.base)
    base["dataset"] = {**base.get("dataset", {}), "source": resolve_source(entry.source, data_dir)}
    if entry.replicate_clients > 1:
        base["clients"] = [
            {**c, "name": f"{c['name']}-r{r}"} for r in range(entry.replicate_clients) for c in base.get("clients", [])
        ]
    cfg = parse_config(base, origin=f"suite {suite.name}, dataset {entry.name}")
    overrides = {
        # A benchmark compares metrics: no registered detector per client per case, unless the suite asks.
        "tracking.log_models": bool(base.get("tracking", {}).get("log_models", False)),
        **entry.overrides,
        **suite.objective_overrides.get(objective, {}),
        **entry.objective_overrides.get(objective, {}),
        "federation.objective": objective,
        "federation.seed": seed,
        "federation.methods": list(suite.methods),
        "name": f"{suite.name}-{entry.name}",
        "tracking.experiment": suite.experiment_name,
    }
    if suite.sweep is not None:
        overrides.update({p: sweep_value for p in suite.sweep.paths})
    overrides.update(extra)
    plain = {k: v for k, v in overrides.items() if "*" not in k}
    cfg = cfg.with_overrides(plain)
    return cfg.with_overrides(_expand({k: v for k, v in overrides.items() if "*" in k}, len(cfg.clients)))


def expand_cases(
    suite: Suite, data_dir: str | Path | None, extra: dict[str, Any] | None = None, seeds: list[int] | None = None
) -> list[Case]:
    """Every case of the suite, each with its validated config (fails before anything runs).
    ``extra`` are dotted overrides applied to every case last (e.g. a smaller run),
    ``seeds`` replace the suite's and every entry's seeds."""
    cases = []
    sweep_values = suite.sweep.values if suite.sweep else [None]
    for entry in suite.datasets:
        for value in sweep_values:
            label = entry.name if value is None else f"{entry.name} {suite.sweep.name}={value:g}"
            for objective in suite.objectives:
                for seed in seeds or entry.seeds or suite.seeds:
                    cfg = _case_config(suite, entry, objective, seed, value, data_dir, extra or {})
                    cases.append(
                        Case(
                            dataset=label,
                            entry=entry.name,
                            objective=objective,
                            seed=seed,
                            sweep_value=value,
                            config=cfg.model_dump(mode="json", by_alias=True),
                        )
                    )
    return cases


DATA_DIR = "the data folder (--data-dir, or the benchmark deployment's data_dir parameter)"


def check_suite(
    suite_path: str, data_dir: str | None, extra: dict[str, Any] | None = None, seeds: list[int] | None = None
) -> tuple[Suite, list[Case]]:
    """Validate a suite before anything starts: fields, every case's config, each dataset's
    files and feature maps (prepared once per dataset) and every case's partition (each
    seed draws its own), so no case fails on its data after hours of others. Raises
    PQFLInputError naming the case."""
    spec = load_suite(suite_path)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise PQFLInputError(f"{DATA_DIR}: {data_dir} is not a folder; pass the folder the suite's files are in")
    cases = expand_cases(spec, data_dir, extra, seeds)
    # scikit-learn and JAX load only now, so a wrong path or field is reported in about a second
    from pqfl.baselines import detectors_for
    from pqfl.data.sources import load_source
    from pqfl.fleet import load_and_partition, prepare

    for objective in spec.objectives:
        detectors_for(objective, spec.baselines)
    seen, loaded = set(), {}
    for case in cases:
        cfg = parse_config(case.config)
        try:
            if case.dataset not in seen:
                seen.add(case.dataset)
                prepare(cfg)
            else:  # an image set is read once, not once per seed and objective
                source = cfg.dataset.source
                loaded[source] = loaded[source] if source in loaded else load_source(source)
                load_and_partition(cfg, loaded[source])
        except PQFLInputError as err:
            relative = data_dir is None and not cfg.dataset.source.startswith("sklearn:")
            hint = f"; relative paths are read from {DATA_DIR}: set it" if relative else ""
            raise PQFLInputError(
                f"dataset {case.dataset!r}, objective {case.objective}, seed {case.seed}: {err}{hint}"
            ) from err
    return spec, cases
