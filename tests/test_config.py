"""pqfl.config: the embedded default loads; every bad input fails at load time with a
PQFLInputError whose message names the field and says how to fix it."""

from __future__ import annotations

import copy
import types
import typing

import pytest
import yaml
from pydantic import ValidationError

from pqfl.config import (
    DEFAULT_CONFIG,
    MAX_QUBITS,
    ClientProfile,
    Config,
    DatasetConfig,
    FederationConfig,
    NoiseConfig,
    PartitionConfig,
    load_config,
    parse_config,
)
from pqfl.errors import PQFLInputError
from tasks.settings import FaultConfig, RetryConfig, RunnerConfig, TrackingConfig, parse_run_config


@pytest.fixture(scope="module")
def default_dict() -> dict:
    """The embedded default, parsed independently of pqfl (plain PyYAML)."""
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def _leaves(prefix: str, obj):
    """(dotted key, value) for every scalar leaf of a YAML mapping; lists of mappings are indexed."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
        for i, v in enumerate(obj):
            yield from _leaves(f"{prefix}.{i}", v)
    else:
        yield prefix, obj


def _write(tmp_path, data, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- default


def test_default_config_loads_and_matches_the_yaml_file(default_dict):
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.name == default_dict["name"]
    assert [c.name for c in cfg.clients] == [c["name"] for c in default_dict["clients"]]
    assert cfg.federation.lam == default_dict["federation"]["lambda"]
    assert cfg.federation.methods == default_dict["federation"]["methods"]
    assert cfg.max_qubits == max(c["qubits"] for c in default_dict["clients"])
    assert cfg.max_layers == max(c["layers"] for c in default_dict["clients"])
    noisy = default_dict["clients"][1]["noise"]
    assert cfg.clients[1].noise.depolarizing == noisy["depolarizing"]
    assert cfg.clients[1].noise.readout == noisy["readout"]
    # A field omitted in the YAML gets its documented default, not None.
    assert cfg.clients[0].noise.depolarizing == 0.0


def test_load_config_of_explicit_path_equals_default(tmp_path, default_dict):
    path = _write(tmp_path, default_dict, "copy.yaml")
    assert load_config(path) == load_config()


# --------------------------------------------------------------------------- bad inputs


def _set(path: str, value):
    """A mutation setting a dotted path (list indices allowed) of the config dict."""

    def mutate(d):
        *parents, leaf = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return mutate


def _duplicate_names(d):
    d["clients"][1]["name"] = d["clients"][0]["name"]


BAD_CASES = {
    # id: (mutation, substrings the message must contain: field ..., fix ...)
    "negative_lr": (_set("federation.lr", -0.1), ["federation.lr", "greater than 0", "-0.1"]),
    "zero_lr_decay": (_set("federation.lr_decay", 0.0), ["federation.lr_decay", "greater than 0"]),
    "lr_decay_above_one": (_set("federation.lr_decay", 1.5), ["federation.lr_decay", "less than or equal to 1", "1.5"]),
    "unknown_head_fit": (_set("federation.head_fit", "svm"), ["federation.head_fit", "'sgd'", "'logreg'", "svm"]),
    "negative_lambda": (_set("federation.lambda", -1.0), ["federation.lambda", "greater than or equal to 0"]),
    "zero_rounds": (_set("federation.rounds", 0), ["federation.rounds", "greater than or equal to 1"]),
    "duplicate_client_names": (_duplicate_names, ["duplicate client names", "clean-6q-amplitude", "unique name"]),
    "min_clients_above_fleet": (
        _set("federation.min_clients", 5),
        ["federation.min_clients", "4 clients", "lower min_clients or add clients"],
    ),
    "unknown_encoding": (
        _set("clients.2.encoding", "basis"),
        ["clients.2.encoding", "'amplitude'", "'angle'", "'iqp'", "basis"],
    ),
    "unknown_entangling": (
        _set("clients.1.entangling", "star"),
        ["clients.1.entangling", "'ring'", "'linear'", "'all_to_all'", "star"],
    ),
    "too_many_qubits": (
        _set("clients.0.qubits", MAX_QUBITS + 1),
        ["clients.0.qubits", "MiB for a batch of 64 state vectors", f"at most {MAX_QUBITS}"],
    ),
    "reupload_without_angle": (
        _set("clients.0.reupload", True),
        ["clients.0", "reupload", "needs encoding: angle", "amplitude", "set encoding: angle or remove reupload"],
    ),
    "noisy_reupload_too_large": (
        lambda d: d["clients"][0].update(encoding="angle", reupload=True, qubits=10, noise={"depolarizing": 0.01}),
        ["clients.0", "reupload", "512 MiB per copy", "at most 8 qubits", "remove that noise"],
    ),
    "unknown_angle_scale": (
        _set("dataset.angle_scale", "minmax"),
        ["dataset.angle_scale", "'whiten'", "'common'", "minmax"],
    ),
    "unknown_measure": (_set("clients.1.measure", "xx"), ["clients.1.measure", "'z'", "'zz'", "xx"]),
    "unknown_top_level_field": (_set("federaton", {"rounds": 3}), ["federaton", "unknown field", "remove it"]),
    "unknown_nested_field": (_set("federation.lam", 0.5), ["federation.lam", "unknown field"]),
    "splits_do_not_sum_to_one": (_set("partition.train", 0.6), ["partition", "sum to 1", "1.1", "adjust"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_config_raises_input_error_naming_field_and_fix(case, tmp_path, default_dict):
    mutate, expected = BAD_CASES[case]
    data = copy.deepcopy(default_dict)
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(PQFLInputError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg  # which file
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nfederation:\n  rounds: [1, 2\n  lr: 0.1\n")
    with pytest.raises(PQFLInputError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "line" in msg
    assert "fix the YAML syntax" in msg


def test_missing_file_raises_input_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(PQFLInputError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(PQFLInputError, match="mapping"):
        load_config(path)


def test_missing_clients_is_reported(tmp_path, default_dict):
    data = copy.deepcopy(default_dict)
    del data["clients"]
    with pytest.raises(PQFLInputError) as info:
        load_config(_write(tmp_path, data))
    assert "clients" in str(info.value)
    assert "required" in str(info.value)


def test_input_error_is_a_value_error():
    # Callers that catch ValueError (e.g. generic CLI handlers) still see config errors.
    assert issubclass(PQFLInputError, ValueError)


# --------------------------------------------------------------------------- overrides / flat


def test_with_overrides_returns_revalidated_copy():
    cfg = load_config()
    new = cfg.with_overrides(**{"federation.rounds": 3, "federation.lambda": 0.7, "partition.alpha": 2.0})
    assert new.federation.rounds == 3
    assert new.federation.lam == 0.7
    assert new.partition.alpha == 2.0
    # The original is untouched and everything else is carried over.
    assert cfg.federation.rounds != 3
    assert new.clients == cfg.clients
    assert new.federation.lr == cfg.federation.lr


def test_with_overrides_validates_the_new_value():
    cfg = load_config()
    with pytest.raises(PQFLInputError) as info:
        cfg.with_overrides(**{"federation.rounds": 0})
    assert "federation.rounds" in str(info.value)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.federation.rounds = 3  # type: ignore[misc]


def test_flat_has_dotted_keys_for_every_yaml_leaf(default_dict):
    flat = load_config().flat()
    assert flat["federation.lambda"] == default_dict["federation"]["lambda"]
    assert flat["clients.0.qubits"] == default_dict["clients"][0]["qubits"]
    assert flat["clients.1.noise.readout"] == default_dict["clients"][1]["noise"]["readout"]
    for key, value in _leaves("", default_dict):
        assert key in flat, key
        assert flat[key] == value, key
    # Values are scalars or plain lists (loggable params), never nested mappings.
    assert not any(isinstance(v, dict) for v in flat.values())
    # Fields omitted in the YAML appear with their defaults.
    assert flat["clients.0.noise.depolarizing"] == 0.0
    assert flat["clients.0.shots"] is None


def test_overrides_accept_a_mapping_and_list_indices():
    cfg = load_config()
    new = cfg.with_overrides({"federation.rounds": 4, "clients.0.qubits": 3})
    assert new.federation.rounds == 4 and new.clients[0].qubits == 3
    assert cfg.clients[0].qubits != 3 or cfg.federation.rounds != 4  # the original is unchanged


@pytest.mark.parametrize("path", ["federaton.rounds", "clients.99.qubits", "federation.nope", "clients.x.qubits"])
def test_unknown_override_path_is_a_clear_error(path):
    with pytest.raises(PQFLInputError, match="no such config field"):
        load_config().with_overrides({path: 1})


def test_whole_config_errors_name_their_field_once(tmp_path):
    import yaml

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["clients"].append(dict(data["clients"][0]))
    path = tmp_path / "dupe.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PQFLInputError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: clients: duplicate client names")


# --------------------------------------------------------------------------- names and numbers


def _minimal(**sections) -> dict:
    return {"clients": [{"name": "a", "qubits": 2}], **sections}


@pytest.mark.parametrize("name", ["a", "clean-6q-amplitude", "amp5-ring-r9", "A.b_c-9", "x" * 64])
def test_safe_client_names_load(name):
    assert parse_config(_minimal(clients=[{"name": name, "qubits": 2}])).clients[0].name == name


@pytest.mark.parametrize(
    "name", ["", "-a", ".a", "..", "a/b", "../x", "/tmp/x", "a b", "a:b", "a\n", "caf\u00e9", "x" * 65]
)
def test_unsafe_client_names_are_refused(name):
    with pytest.raises(PQFLInputError) as info:
        parse_config(_minimal(clients=[{"name": name, "qubits": 2}]))
    msg = str(info.value)
    assert msg.startswith("config: clients.0.name: use 1-64 letters, digits, '.', '_' or '-'"), msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["pqfl", "pqfl-benchmark-odds", "odds-cardio r3", "My run 2.1", "x" * 128])
def test_safe_experiment_names_load(name):
    assert parse_config(_minimal(name=name)).name == name
    assert parse_run_config(_minimal(tracking={"experiment": name})).experiment_name == name


@pytest.mark.parametrize("name", ["", " x", "..", "../x", "/tmp/x", "a/b", ".x", "a\tb", "x" * 129])
@pytest.mark.parametrize("field", ["name", "tracking.experiment"])
def test_unsafe_experiment_names_are_refused(name, field):
    data = _minimal(name=name) if field == "name" else _minimal(tracking={"experiment": name})
    with pytest.raises(PQFLInputError) as info:
        parse_run_config(data)
    msg = str(info.value)
    assert msg.startswith(f"config: {field}: use 1-128 letters, digits, spaces, '.', '_' or '-'"), msg
    assert "\n" not in msg


def test_a_long_name_is_cut_short_in_the_message():
    with pytest.raises(PQFLInputError) as info:
        parse_config(_minimal(name="y" * 20_000))
    msg = str(info.value)
    assert len(msg) < 500 and "(20,002 characters)" in msg


def _plain(annotation):
    """The type under Optional and Annotated: float for ``Float | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


# Every section whose fields the YAML sets directly, and the config path of its fields.
_SECTIONS = {
    "dataset": DatasetConfig,
    "partition": PartitionConfig,
    "federation": FederationConfig,
    "clients.0": ClientProfile,
    "clients.0.noise": NoiseConfig,
    "runner": RunnerConfig,
    "retries": RetryConfig,
    "faults": FaultConfig,
    "tracking": TrackingConfig,
}


def _fields(kind) -> list[str]:
    return [
        f"{section}.{info.alias or name}"
        for section, model in _SECTIONS.items()
        for name, info in model.model_fields.items()
        if _plain(info.annotation) is kind
    ]


def _with(path: str, value) -> dict:
    data = _minimal()
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    node[leaf] = value
    return data


def test_every_number_field_is_covered():
    floats, ints = _fields(float), _fields(int)
    assert {
        "federation.lr",
        "federation.lambda",
        "federation.mu",
        "federation.init_scale",
        "federation.head_l2",
    } <= set(floats)
    assert {"dataset.fisher_ridge", "federation.lr_decay", "retries.backoff_s", "faults.transient_rate"} <= set(floats)
    assert "tracking.metrics_every_s" in floats
    assert {"federation.seed", "federation.rounds", "federation.batch_size", "clients.0.qubits"} <= set(ints)
    assert {"dataset.max_samples", "clients.0.shots", "retries.max_retries", "runner.max_workers"} <= set(ints)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("path", _fields(float) + ["clients.0.noise.depolarizing", "clients.0.noise.readout"])
def test_float_fields_must_be_finite(path, value):
    with pytest.raises(PQFLInputError) as info:
        parse_run_config(_with(path, value))
    msg = str(info.value)
    assert msg.startswith(f"config: {path}: "), msg
    assert "finite" in msg, msg


@pytest.mark.parametrize("path", _fields(int) + _fields(float) + ["dataset.normal_classes"])
def test_number_fields_refuse_booleans(path):
    value = [True] if path == "dataset.normal_classes" else True
    with pytest.raises(PQFLInputError) as info:
        parse_run_config(_with(path, value))
    msg = str(info.value)
    assert msg.startswith(f"config: {path}"), msg
    assert "not true or false (got True)" in msg, msg


def test_number_fields_still_take_what_they_took():
    """Integers for float fields, integral floats for integer fields, lists of probabilities."""
    fed = parse_config(_minimal(federation={"lr": 1, "rounds": 3.0, "lambda": 0, "seed": 7})).federation
    assert fed.lr == 1.0 and fed.lam == 0.0 and fed.seed == 7
    assert fed.rounds == 3 and isinstance(fed.rounds, int)
    noise = parse_config(_with("clients.0.noise.depolarizing", [0.01, 0.02])).clients[0].noise
    assert noise.depolarizing == [0.01, 0.02]


def test_config_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# r\u00e9glages\nclients: [{name: a, qubits: 2}]\n".encode("latin-1"))
    with pytest.raises(PQFLInputError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8"


def test_config_path_too_long_for_the_file_system_is_not_found():
    with pytest.raises(PQFLInputError) as info:
        load_config("x" * 5000 + ".yaml")
    assert "not found" in str(info.value) and "(5,005 characters)" in str(info.value)
