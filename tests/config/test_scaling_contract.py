"""The scaling contract: OpenFaaS's labels and the routes file's scale: block, one validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from faaso.config.deployment import deployment_to_spec
from faaso.config.routes_file import load_config
from faaso.config.scaling import ScaleError, parse_duration, parse_scaling
from faaso.errors import ConfigError, InvalidRequest
from faaso.spec.scaling import ScalePolicy, ScaleType


def make(tmp_path: Path, function: str) -> Path:
    d = tmp_path / "fn"
    d.mkdir(exist_ok=True)
    (d / "handler.py").write_text("def handle(event, context):\n    return 'ok'\n")
    path = tmp_path / "routes.yml"
    path.write_text(f"functions:\n  f: {{source: fn, runtime: python, {function}}}\n")
    return path


def test_defaults_are_openfaas_ones() -> None:
    policy = parse_scaling({}).policy
    assert policy == ScalePolicy()
    assert (policy.min, policy.max, policy.target, policy.type) == (1, 20, 50.0, ScaleType.RPS)
    assert (policy.target_proportion, policy.zero, policy.zero_duration) == (0.9, False, 900.0)
    assert (policy.tick, policy.stable_window, policy.panic_window) == (2.0, 60.0, 6.0)


def test_labels_and_block_are_the_same_contract() -> None:
    labels = {
        "com.openfaas.scale.min": "2",
        "com.openfaas.scale.max": "8",
        "com.openfaas.scale.target": "10",
        "com.openfaas.scale.type": "capacity",
        "com.openfaas.scale.target-proportion": "0.5",
        "com.openfaas.scale.zero": "true",
        "com.openfaas.scale.zero-duration": "1m30s",
        "com.openfaas.scale.factor": "50",
    }
    block = {
        "min": 2,
        "max": 8,
        "target": 10,
        "type": "capacity",
        "target_proportion": 0.5,
        "zero": True,
        "zero_duration": "90s",
        "factor": 50,
    }
    assert parse_scaling(labels).policy == parse_scaling({}, block).policy
    assert parse_scaling(labels).policy.per_replica == 5.0


@pytest.mark.parametrize(
    ("labels", "block", "key", "value"),
    [
        ({"com.openfaas.scale.min": "x"}, {}, "labels.com.openfaas.scale.min", "x"),
        ({"com.openfaas.scale.type": "memory"}, {}, "labels.com.openfaas.scale.type", "memory"),
        ({"com.openfaas.scale.zero": "yes"}, {}, "labels.com.openfaas.scale.zero", "yes"),
        ({"com.openfaas.scale.oops": "1"}, {}, "labels.com.openfaas.scale.oops", "1"),
        ({}, {"max": 0}, "scale.max", 0),
        ({}, {"min": 5, "max": 2}, "scale.max", 2),
        ({}, {"zero_duration": "15 minutes"}, "scale.zero_duration", "15 minutes"),
        ({}, {"target_proportion": 1.5}, "scale.target_proportion", 1.5),
        ({}, {"speed": 1}, "scale.speed", "speed"),
        ({}, {"panic_window": 90}, "scale.panic_window", 90.0),
        ({"com.openfaas.scale.min": "2"}, {"min": 2}, "scale.min", 2),
    ],
)
def test_errors_name_key_and_value(
    labels: dict[str, str], block: dict[str, object], key: str, value: object
) -> None:
    with pytest.raises(ScaleError) as info:
        parse_scaling(labels, block)
    assert (info.value.key, info.value.value) == (key, value)


def test_durations() -> None:
    assert parse_duration("15m") == 900 and parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5 and parse_duration(3) == 3.0
    for bad in ("", "m", "-1", 0, True, "1d"):
        with pytest.raises(ValueError, match=r"duration|more than 0"):
            parse_duration(bad)


def test_routes_file_scale_block_and_replicas(tmp_path: Path) -> None:
    spec = load_config(make(tmp_path, "scale: {min: 2, max: 5}")).functions["f"]
    assert (spec.replicas, spec.scale.min, spec.scale.max) == (2, 2, 5)
    # replicas: N alone keeps at least N running
    spec = load_config(make(tmp_path, "replicas: 3")).functions["f"]
    assert (spec.replicas, spec.scale.min) == (3, 3)
    spec = load_config(make(tmp_path, "replicas: 0, scale: {zero: true}")).functions["f"]
    assert (spec.replicas, spec.scale.zero) == (0, True)
    labelled = "labels: {com.openfaas.scale.min: 4}"
    assert load_config(make(tmp_path, labelled)).functions["f"].replicas == 4


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("scale: {min: 2, max: 3}, replicas: 5", "functions.f.replicas", "5"),
        ("scale: {type: gpu}", "functions.f.scale.type", "'gpu'"),
        (
            "labels: {com.openfaas.scale.max: lots}",
            "functions.f.labels.com.openfaas.scale.max",
            "lots",
        ),
        ("scale: [1]", "functions.f.scale", "[1]"),
    ],
)
def test_routes_file_errors(tmp_path: Path, text: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(make(tmp_path, text))
    message = str(info.value)
    assert key in message and value in message and "routes.yml" in message


def test_deployment_replicas_start_at_min() -> None:
    doc = {"service": "f", "image": "x", "labels": {"com.openfaas.scale.min": "3"}}
    spec = deployment_to_spec(doc)
    assert (spec.replicas, spec.scale.min) == (3, 3)
    assert deployment_to_spec({"service": "f", "image": "x"}).replicas == 1
    with pytest.raises(InvalidRequest, match=r"com\.openfaas\.scale\.zero.*maybe"):
        deployment_to_spec(
            {"service": "f", "image": "x", "labels": {"com.openfaas.scale.zero": "maybe"}}
        )
