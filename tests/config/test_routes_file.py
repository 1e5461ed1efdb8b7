from __future__ import annotations

import os
from pathlib import Path

import pytest

from faaso.config.routes_file import load_config
from faaso.errors import ConfigError
from faaso.spec.function import parse_memory

ROOT = Path(__file__).resolve().parents[2]


def make(tmp_path: Path, text: str, functions: tuple[str, ...] = ("sum",)) -> Path:
    for name in functions:
        d = tmp_path / "functions" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "handler.py").write_text("def handle(event, context):\n    return 'ok'\n")
    path = tmp_path / "routes.yml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    config = load_config(ROOT / "conf" / "routes.yml")
    assert set(config.functions) == {"sum", "mul"}
    assert dict(config.routes) == {"/sum": "sum", "/mul": "mul"}
    spec = config.functions["sum"]
    assert spec.runtime == "python"
    assert spec.source == ROOT / "conf" / "functions" / "sum"
    assert spec.replicas == 1


def test_full_function(tmp_path: Path) -> None:
    path = make(
        tmp_path,
        """
functions:
  sum: {source: functions/sum, runtime: python, replicas: 3, timeout: 2.5,
        env: {A: 1, B: true, C: x}, limits: {memory: 128Mi, cpus: 0.5}}
  hello: {image: "some/prebuilt:tag", env: {GREETING: hi}}
routes:
  /sum/: sum
  /: hello
""",
    )
    config = load_config(path)
    s = config.functions["sum"]
    assert (s.replicas, s.timeout, dict(s.env)) == (3, 2.5, {"A": "1", "B": "true", "C": "x"})
    assert s.limits.memory == 128 * 1024**2 and s.limits.cpus == 0.5
    h = config.functions["hello"]
    assert h.image == "some/prebuilt:tag" and h.source is None and h.replicas == 1
    assert dict(config.routes) == {"/sum": "sum", "/": "hello"}
    with pytest.raises(AttributeError):
        s.replicas = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("functions:\n  sum: {source: functions/sum}\nextra: 1\n", "extra", "unknown key"),
        (
            "functions:\n  sum: {source: functions/sum, replica: 2}\n",
            "functions.sum.replica",
            "unknown key",
        ),
        ("functions:\n  Sum: {source: functions/sum}\n", "functions.Sum", "lowercase"),
        (
            "functions:\n  sum: {source: functions/nope}\n",
            "functions.sum.source",
            "not a directory",
        ),
        (
            "functions:\n  sum: {source: functions/sum, runtime: cobol}\n",
            "functions.sum.runtime",
            "no such runtime",
        ),
        (
            "functions:\n  sum: {source: functions/sum}\nroutes: {/sum: mul}\n",
            "routes./sum",
            "must name a function",
        ),
        (
            "functions:\n  sum: {source: functions/sum}\nroutes: {sum: sum}\n",
            "routes.sum",
            "start with '/'",
        ),
        (
            "functions:\n  sum: {source: functions/sum}\nroutes: {/system/x: sum}\n",
            "routes./system/x",
            "reserved",
        ),
        (
            "functions:\n  sum: {source: functions/sum}\nroutes: {/a/../b: sum}\n",
            "routes./a/../b",
            "clean URL path",
        ),
        (
            "functions:\n  sum: {source: functions/sum}\nroutes: {/sum: sum, /sum/: sum}\n",
            "routes./sum/",
            "same route",
        ),
        (
            "functions:\n  sum: {source: functions/sum, replicas: -1}\n",
            "functions.sum.replicas",
            "whole number",
        ),
        (
            "functions:\n  sum: {source: functions/sum, replicas: true}\n",
            "functions.sum.replicas",
            "whole number",
        ),
        (
            "functions:\n  sum: {source: functions/sum, timeout: 0}\n",
            "functions.sum.timeout",
            "greater than 0",
        ),
        (
            "functions:\n  sum: {source: functions/sum, image: x}\n",
            "functions.sum.image",
            "not both",
        ),
        ("functions:\n  sum: {runtime: python}\n", "functions.sum", "needs either"),
        (
            "functions:\n  sum: {source: functions/sum, limits: {memory: lots}}\n",
            "functions.sum.limits.memory",
            "not a size",
        ),
        (
            "functions:\n  sum: {source: functions/sum, env: {1BAD: x}}\n",
            "functions.sum.env.1BAD",
            "not a valid name",
        ),
        (
            "functions:\n  sum: {source: functions/sum, labels: {faaso.owner: x}}\n",
            "functions.sum.labels.faaso.owner",
            "faaso's own",
        ),
        ("", "functions", "functions: {}"),
        (
            "functions:\n  sum: {source: functions/sum, max_inflight: 0}\n",
            "functions.sum.max_inflight",
            "1 or more",
        ),
        ("functions: [sum]\n", "functions", "mapping"),
    ],
)
def test_errors_name_file_key_and_value(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = make(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.path == str(path)
    assert err.key == key
    assert fragment in str(err)
    assert str(path) in str(err)


def test_missing_handler_is_named(tmp_path: Path) -> None:
    path = make(tmp_path, "functions:\n  sum: {source: functions/sum}\n")
    (tmp_path / "functions/sum/handler.py").unlink()
    with pytest.raises(ConfigError, match=r"needs handler\.py"):
        load_config(path)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = make(tmp_path, "functions:\n  sum: {source: functions/sum\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(path)
    assert "line" in str(info.value.value)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = make(
        tmp_path, "functions:\n  sum: {source: functions/sum}\n  sum: {source: functions/sum}\n"
    )
    with pytest.raises(ConfigError, match="duplicate key 'sum'"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yml")


def test_runtimes_key_adds_a_folder(tmp_path: Path) -> None:
    rt = tmp_path / "myruntimes" / "shell"
    rt.mkdir(parents=True)
    (rt / "runtime.yml").write_text("description: shell\nrequired_files: [run.sh]\n")
    (tmp_path / "functions/sh").mkdir(parents=True)
    (tmp_path / "functions/sh/run.sh").write_text("echo hi\n")
    path = tmp_path / "routes.yml"
    path.write_text(
        "runtimes: myruntimes\nfunctions:\n  sh: {source: functions/sh, runtime: shell}\n"
    )
    config = load_config(path)
    assert config.functions["sh"].runtime == "shell"
    assert config.runtime_dirs[0] == (tmp_path / "myruntimes").resolve()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, 1024),
        ("128Mi", 128 * 2**20),
        ("256m", 256 * 10**6),
        ("1G", 10**9),
        ("1.5Gi", 3 * 2**29),
    ],
)
def test_parse_memory(value: object, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["", "12 parsecs", True, None, [1]])
def test_parse_memory_rejects(value: object) -> None:
    with pytest.raises(ValueError, match=r"not a size|unknown unit"):
        parse_memory(value)


def test_runtime_falls_back_to_function_yml(tmp_path: Path) -> None:
    fn = tmp_path / "functions" / "greet"
    fn.mkdir(parents=True)
    (fn / "handler.js").write_text("module.exports = async () => 'hi'\n")
    (fn / "function.yml").write_text("runtime: node\n")
    path = tmp_path / "routes.yml"
    path.write_text("functions:\n  greet: {source: functions/greet}\n")
    assert load_config(path).functions["greet"].runtime == "node"
    path.write_text("functions:\n  greet: {source: functions/greet, runtime: python}\n")
    with pytest.raises(ConfigError, match=r"handler\.py"):
        load_config(path)


def test_an_empty_functions_map_is_a_server_for_the_api_only(tmp_path: Path) -> None:
    for text in ("functions: {}\n", "functions:\nroutes: {}\n", "async: {concurrency: 2}\n"):
        config = load_config(make(tmp_path, text))
        assert dict(config.functions) == {} and dict(config.routes) == {}
    with pytest.raises(ConfigError, match="must name a function defined"):
        load_config(make(tmp_path, "functions: {}\nroutes: {/x: ghost}\n"))


def test_limits_the_host_cannot_give_are_refused(tmp_path: Path) -> None:
    """More CPUs than the host has (the engine would refuse every container), or more memory
    than it has: an error naming the key and value, before anything starts."""
    cpus = (os.cpu_count() or 1) + 1
    for text, key, fragment in (
        (f"{{cpus: {cpus}}}", "functions.sum.limits.cpus", "CPUs"),
        ("{memory: 100000Gi}", "functions.sum.limits.memory", "this host's memory"),
    ):
        path = make(tmp_path, f"functions:\n  sum: {{source: functions/sum, limits: {text}}}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key == key and fragment in str(info.value), str(info.value)
    # what the host has is fine
    limits = f"{{cpus: {cpus - 1}, memory: 64Mi}}"
    path = make(tmp_path, f"functions:\n  sum: {{source: functions/sum, limits: {limits}}}\n")
    assert load_config(path).functions["sum"].limits.cpus == cpus - 1
