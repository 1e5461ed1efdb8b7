"""Build planning: rendering and hashing, no engine needed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faaso.build.builder import plan
from faaso.config.runtimes import RuntimeCatalog
from faaso.errors import ConfigError
from faaso.spec.function import FunctionSpec
from tests.helpers import free_port, http_request

BASE = "sha256:" + "0" * 64


def runtime_dir(tmp_path: Path) -> Path:
    rt = tmp_path / "runtimes" / "toy"
    (rt / "template").mkdir(parents=True)
    (rt / "runtime.yml").write_text(
        "description: toy\nrequired_files: [main.sh]\n"
        "options: {packages: [], greeting: hello}\n"
        "wheels: {function/requirements.txt: wheels/function}\n"
    )
    (rt / "Dockerfile.j2").write_text(
        "FROM {{ base_image }}\n"
        "RUN echo {{ options.greeting }} {{ options.packages | join(' ') }}\n"
        "{% if 'requirements.txt' in files %}COPY wheels/function /w\n{% endif %}"
        "COPY function/ /f/\n"
    )
    (rt / "template" / "main.sh").write_text("echo starter\n")
    (rt / "helper.sh").write_text("#!/bin/sh\n")
    return rt.parent


def function_dir(tmp_path: Path) -> Path:
    fn = tmp_path / "fn"
    fn.mkdir()
    (fn / "main.sh").write_text("echo hi\n")
    (fn / "__pycache__").mkdir()
    (fn / "__pycache__" / "x.pyc").write_bytes(b"junk")
    return fn


@pytest.fixture
def setup(tmp_path: Path) -> tuple[RuntimeCatalog, FunctionSpec]:
    catalog = RuntimeCatalog((runtime_dir(tmp_path),))
    spec = FunctionSpec(name="toy-fn", source=function_dir(tmp_path), runtime="toy")
    return catalog, spec


def test_plan_renders_and_overlays(setup: tuple[RuntimeCatalog, FunctionSpec]) -> None:
    catalog, spec = setup
    p = plan(spec, catalog, BASE)
    assert p.tag.startswith("faaso/toy-fn:") and len(p.tag.split(":")[1]) == 16
    assert sorted(p.files) == ["Dockerfile", "function/main.sh", "helper.sh"]
    dockerfile = p.files["Dockerfile"]
    assert isinstance(dockerfile, bytes)
    assert dockerfile.decode() == (
        "FROM faaso/debian:bookworm\nRUN echo hello \nCOPY function/ /f/\n"
    )


def test_hash_is_stable_and_content_addressed(setup: tuple[RuntimeCatalog, FunctionSpec]) -> None:
    catalog, spec = setup
    assert spec.source is not None
    first = plan(spec, catalog, BASE).tag
    assert plan(spec, catalog, BASE).tag == first
    (spec.source / "__pycache__" / "y.pyc").write_bytes(b"more junk")  # ignored
    assert plan(spec, catalog, BASE).tag == first
    (spec.source / "main.sh").write_text("echo changed\n")
    changed = plan(spec, catalog, BASE).tag
    assert changed != first
    assert plan(spec, catalog, "sha256:" + "1" * 64).tag != changed  # new base image
    (spec.source / "main.sh").write_text("echo hi\n")
    assert plan(spec, catalog, BASE).tag == first  # back to the same content, same tag


def test_function_options_and_requirements(setup: tuple[RuntimeCatalog, FunctionSpec]) -> None:
    catalog, spec = setup
    assert spec.source is not None
    (spec.source / "function.yml").write_text("options: {greeting: hi, packages: [curl]}\n")
    (spec.source / "requirements.txt").write_text("six\n")
    p = plan(spec, catalog, BASE)
    dockerfile = p.files["Dockerfile"]
    assert isinstance(dockerfile, bytes)
    assert b"RUN echo hi curl\n" in dockerfile
    assert b"COPY wheels/function /w\n" in dockerfile
    assert dict(p.wheel_sets) == {"function/requirements.txt": "wheels/function"}


def test_faasoignore_keeps_files_out_of_the_context_and_the_hash(
    setup: tuple[RuntimeCatalog, FunctionSpec],
) -> None:
    catalog, spec = setup
    assert spec.source is not None
    (spec.source / "data").mkdir()
    (spec.source / "data" / "big.csv").write_text("1,2\n")
    (spec.source / "notes.csv").write_text("x\n")
    (spec.source / "keep.csv").write_text("y\n")
    (spec.source / "sub").mkdir()
    (spec.source / "sub" / "TODO").write_text("z\n")
    (spec.source / "TODO").write_text("z\n")
    before = plan(spec, catalog, BASE)
    assert "function/data/big.csv" in before.files
    (spec.source / ".faasoignore").write_text("# comments work\ndata/\n*.csv\n!keep.csv\n/TODO\n")
    p = plan(spec, catalog, BASE)
    assert sorted(f for f in p.files if f.startswith("function/")) == [
        "function/keep.csv",
        "function/main.sh",
        "function/sub/TODO",  # "/TODO" is anchored at the folder
    ]
    # Editing an ignored file changes nothing; editing a kept one does.
    (spec.source / "data" / "big.csv").write_text("3,4\n")
    (spec.source / "data" / "new.bin").write_bytes(b"\0")
    (spec.source / "TODO").write_text("changed\n")
    assert plan(spec, catalog, BASE).tag == p.tag
    (spec.source / "keep.csv").write_text("changed\n")
    assert plan(spec, catalog, BASE).tag != p.tag


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("options: {nope: 1}\n", "options.nope"),
        ("options: {greeting: [1]}\n", "options.greeting"),
        ("wat: 1\n", "wat"),
        ("options: [1]\n", "options"),
    ],
)
def test_bad_function_yml(setup: tuple[RuntimeCatalog, FunctionSpec], text: str, key: str) -> None:
    catalog, spec = setup
    assert spec.source is not None
    (spec.source / "function.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        plan(spec, catalog, BASE)
    assert info.value.key == key
    assert info.value.path.endswith("function.yml")


def test_python_runtime_plan(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "sum"
    shutil.copytree(root / "conf" / "functions" / "sum", src)
    spec = FunctionSpec(name="sum", source=src, runtime="python")
    p = plan(spec, RuntimeCatalog(), BASE)
    assert "server.py" in p.files and "function/handler.py" in p.files
    dockerfile = p.files["Dockerfile"]
    assert isinstance(dockerfile, bytes)
    assert b"function-requirements" not in dockerfile
    (src / "requirements.txt").write_text("six==1.16.0\n")
    dockerfile = plan(spec, RuntimeCatalog(), BASE).files["Dockerfile"]
    assert isinstance(dockerfile, bytes)
    assert b"COPY function/requirements.txt" in dockerfile


# --------------------------------------------------------------------------- served, for real


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_serve_keeps_serving_beside_a_failing_build(require_docker: None, tmp_path: Path) -> None:
    """Builds at start-up run side by side; the one that fails is reported on /healthz with
    its function's name and its build log tail, and the others are served all the same."""
    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "conf" / "functions" / "shout", tmp_path / "loud")
    bad = tmp_path / "bad-apt"
    bad.mkdir()
    (bad / "function.yml").write_text(
        "runtime: dockerfile\noptions: {command: cat, apt_packages: [faaso-no-such-package]}\n"
    )
    config = tmp_path / "routes.yml"
    config.write_text(
        "functions:\n"
        "  loud: {source: loud, runtime: dockerfile}\n"
        "  bad-apt: {source: bad-apt, runtime: dockerfile}\n"
        "routes: {/loud: loud, /bad: bad-apt}\n"
    )
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "faaso", "serve", str(config), "--port", str(port)),
                *("--no-auth", "--no-watch", "--state-dir", str(tmp_path / "state")),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    try:
        deadline = time.monotonic() + 540
        failed: dict[str, object] | None = None
        while failed is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            status, body = http_request(port, "/healthz")
            if status:
                doc = json.loads(body)
                failed = next((f for f in doc.get("not_ready", []) if f["phase"] == "failed"), None)
            if failed is None:
                time.sleep(0.2)  # poll with a deadline
        assert failed["function"] == "bad-apt"
        error = str(failed["error"])
        assert error.startswith("build of function 'bad-apt' failed:")
        assert "Unable to locate package faaso-no-such-package" in error  # the log tail
        while http_request(port, "/loud")[0] != 200:  # the other function serves regardless
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)  # poll with a deadline
        assert http_request(port, "/loud", method="POST", body=b"still here")[1] == b"STILL HERE"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
