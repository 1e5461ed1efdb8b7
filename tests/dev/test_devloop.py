"""The developer's commands against the real engine: build, test, run, export, per runtime.

Each test runs the real ``python -m faaso`` (or the library underneath it) and real containers.
Images are content-addressed, so a function built by one test is reused by the next; functions
copied into tmp_path get names of their own, so that these tests never untag an image another
test (or another module) relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from faaso.build import engine as docker_client
from faaso.build.builder import Builder
from faaso.config.runtimes import RuntimeCatalog
from faaso.dev.loop import LocalContainer, load_function_dir
from faaso.errors import DevError
from faaso.logs import get_logger
from tests.helpers import ROOT, free_port, http_request

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

FUNCTIONS = ROOT / "conf" / "functions"
BUILD_TIMEOUT = 600  # a first build (apt in the image, wheels, npm) fits well inside this
DEADLINE = 60.0  # anything else we poll for


def faaso(*args: str, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faaso", *args, "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def copy_function(name: str, dest: Path) -> Path:
    shutil.copytree(FUNCTIONS / name, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name.replace("__", ".")
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


def docker_json(*argv: str) -> object:
    out = subprocess.run(["docker", *argv], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def layers(image: str) -> list[str]:
    found = docker_json("image", "inspect", "--format", "{{json .RootFS.Layers}}", image)
    assert isinstance(found, list)
    return [str(x) for x in found]


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def dev_containers(function: str) -> list[str]:
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-aq",
            "--filter",
            "label=faaso.dev=true",
            "--filter",
            f"label=faaso.function={function}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def until(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # poll with a deadline


# --------------------------------------------------------------------------- faaso test


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("name", ["sum", "mul", "greet", "shout"])
def test_faaso_test_passes_on_the_examples(name: str) -> None:
    done = faaso("test", str(FUNCTIONS / name))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    count = len(load_function_dir(FUNCTIONS / name, RuntimeCatalog()).tests)
    assert count >= 2
    assert [line.split()[0] for line in lines[:-1]] == ["PASS"] * count, done.stdout
    assert lines[-1] == f"{name}: {count} passed, 0 failed"
    assert not dev_containers(name), "faaso test removes its container"


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_faaso_test_fails_when_the_function_gives_the_wrong_answer(tmp_path: Path) -> None:
    folder = copy_function("sum", tmp_path / "sum-wrong")
    handler = folder / "handler.py"
    handler.write_text(handler.read_text().replace("total = sum(", "total = 1 + sum("))
    done = faaso("test", str(folder))
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    out = done.stdout
    assert "FAIL  sum-wrong test 1: GET /?a=2&b=3 -> 200\n      body '6', expected '5'" in out
    assert (
        "FAIL  sum-wrong test 2: GET /?n=1&n=2&n=-0.5 -> 200\n      JSON 3.5, expected 2.5" in out
    )
    assert "PASS  sum-wrong test 5: GET /?a=2&b=x -> 400" in out  # errors are unchanged
    assert out.endswith("sum-wrong: 4 passed, 4 failed\n")
    assert not dev_containers("sum-wrong")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_faaso_test_fails_on_a_wrong_expectation_without_a_rebuild(tmp_path: Path) -> None:
    folder = copy_function("greet", tmp_path / "greet")
    spec_file = folder / "function.yml"
    spec_file.write_text(spec_file.read_text().replace("hello Ada", "hi Ada"))
    tag = faaso("build", str(FUNCTIONS / "greet")).stdout.strip()
    assert faaso("build", str(folder)).stdout.strip() == tag  # tests are not in the image
    done = faaso("test", str(folder))
    assert done.returncode == 1
    assert "JSON {'greeting': 'hello Ada'}, expected {'greeting': 'hi Ada'}" in done.stdout


# --------------------------------------------------------------------------- build


@pytest.fixture
def made_images() -> Iterator[list[str]]:
    """Tags a test made with content of its own: removed afterwards (layers stay shared)."""
    tags: list[str] = []
    yield tags
    if tags:
        subprocess.run(["docker", "rmi", *tags], capture_output=True)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_build_prints_the_tag_and_a_second_build_is_a_no_op(
    tmp_path: Path, made_images: list[str]
) -> None:
    folder = copy_function("shout", tmp_path / "shout-build")
    (folder / "build-id.txt").write_text(secrets.token_hex(8))  # never built before
    first = faaso("build", str(folder))
    assert first.returncode == 0, first.stderr[-3000:]
    tag = first.stdout.strip()
    made_images.append(tag)
    assert tag.startswith("faaso/shout-build:") and image_exists(tag)
    for event in ("build.start", "build.step", "build.done"):  # progress, as it happens
        assert f'"event": "{event}"' in first.stderr
    again = faaso("build", str(folder))
    assert again.stdout.strip() == tag
    assert "build.start" not in again.stderr  # the engine has it: nothing is built


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_python_code_change_reuses_the_dependency_layers(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "py-deps",
        requirements__txt="six==1.16.0\n",
        handler__py="""
        import six


        def handle(event, context):
            return {"six": six.__version__}
        """,
        function__yml="""
        tests:
          - request: {path: /}
            expect: {status: 200, json: {six: 1.16.0}}
        """,
    )
    done = faaso("test", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    before = faaso("build", str(folder)).stdout.strip()
    handler = folder / "handler.py"
    handler.write_text(handler.read_text().replace('"six"', '"six_version"'))
    done = faaso("build", str(folder))
    after = done.stdout.strip()
    assert after != before
    old, new = layers(before), layers(after)
    # Only the last layer (COPY function/) differs: the venv with six was not rebuilt.
    assert len(old) == len(new) and old[:-1] == new[:-1] and old[-1] != new[-1]
    assert "wheels.download" not in done.stderr


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_node_runtime_with_a_package_and_cached_layers(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "node-deps",
        package__json='{"name": "node-deps", "dependencies": {"ms": "2.1.3"}}\n',
        handler__js="""
        const ms = require("ms");
        module.exports = async (event, context) => ({
          ms: ms(event.query.t || "1m"),
          queryAll: event.queryAll.getAll("n"),
          path: event.path,
          host: context.hostname.length > 0,
        });
        """,
        function__yml="""
        runtime: node
        tests:
          - request: {path: "/a%20b?t=2h&n=1&n=2"}
            expect: {status: 200, json: {ms: 7200000, queryAll: ["1", "2"], path: /a b, host: true}}
        """,
    )
    (folder / "node_modules").mkdir()  # a local node_modules never goes into the image
    (folder / "node_modules" / "junk.js").write_text("syntax error here(")
    done = faaso("test", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    before = faaso("build", str(folder)).stdout.strip()
    handler = folder / "handler.js"
    handler.write_text(handler.read_text().replace("host:", "hostSet:"))
    after = faaso("build", str(folder)).stdout.strip()
    old, new = layers(before), layers(after)
    assert len(old) == len(new) and old[:-1] == new[:-1] and old[-1] != new[-1]


# --------------------------------------------------------------------------- dockerfile runtime

WATCHDOG_SCRIPT = """
#!/bin/sh
case "$Http_Query" in
  fail) echo "it went wrong" >&2; exit 3 ;;
  env) printf '%s %s %s' "$Http_Method" "$Http_Path" "$Http_X_Thing" ;;
  *) wc -c | tr -d ' \\n' ;;
esac
"""


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_dockerfile_runtime_wraps_a_command(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "counter",
        run__sh=WATCHDOG_SCRIPT,
        function__yml="""
        runtime: dockerfile
        options: {command: ./run.sh, content_type: application/json}
        tests:
          - request: {method: POST, path: /, body: "12345"}
            expect: {status: 200, json: 5, headers: {Content-Type: application/json}}
          - request: {method: PUT, path: "/p/q?env", headers: {X-Thing: "yes"}}
            expect: {status: 200, body: PUT /p/q yes}
          - request: {path: "/?fail"}
            expect: {status: 500, body: "it went wrong\\n"}
          - request: {path: /_/health}
            expect: {status: 200, json: {status: ok}}
        """,
    )
    os.chmod(folder / "run.sh", 0o755)
    done = faaso("test", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.endswith("counter: 4 passed, 0 failed\n")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_dockerfile_runtime_builds_the_functions_own_dockerfile(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "static-site",
        Dockerfile="""
        FROM faaso/debian:bookworm
        RUN apt-get update && apt-get install -y --no-install-recommends busybox \\
         && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
        COPY www /www
        EXPOSE 8080
        CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
        """,
        function__yml="""
        runtime: dockerfile
        tests:
          - request: {path: /hello.txt}
            expect: {status: 200, body: "hello from a Dockerfile\\n"}
        """,
    )
    write(folder / "www", hello__txt="hello from a Dockerfile\n")
    write(folder / "www" / "_", health="ok\n")
    done = faaso("test", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


async def test_an_image_that_does_not_serve_the_contract_is_named(
    require_docker: None, tmp_path: Path
) -> None:
    wrong_port = write(
        tmp_path / "wrong-port",
        Dockerfile="""
        FROM faaso/debian:bookworm
        CMD ["sh", "-c", "echo listening on 9090 instead; exec sleep 60"]
        """,
        function__yml="runtime: dockerfile\n",
    )
    exits = write(
        tmp_path / "exits-at-once",
        Dockerfile='FROM faaso/debian:bookworm\nCMD ["sh", "-c", "echo no config >&2; exit 3"]\n',
        function__yml="runtime: dockerfile\n",
    )
    catalog = RuntimeCatalog()
    docker = await docker_client.connect()
    try:
        builder = Builder(docker, catalog, get_logger("test"))
        async with aiohttp.ClientSession() as session:
            tag = await builder.ensure(load_function_dir(wrong_port, catalog).spec)
            container = await LocalContainer.start(docker, tag, "wrong-port")
            try:
                with pytest.raises(DevError) as info:
                    await container.wait_healthy(session, timeout=2.0)
            finally:
                await container.remove()
            message = str(info.value)
            assert "did not answer GET /_/health with 200 on port 8080 within 2 s" in message
            assert "| listening on 9090 instead" in message

            tag = await builder.ensure(load_function_dir(exits, catalog).spec)
            container = await LocalContainer.start(docker, tag, "exits-at-once")
            try:
                with pytest.raises(DevError, match=r"exited with code 3(.|\n)*\| no config"):
                    await container.wait_healthy(session, timeout=DEADLINE)
            finally:
                await container.remove()
    finally:
        await docker.close()


# --------------------------------------------------------------------------- bad input, for real


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_broken_function_fails_before_any_image_is_built(tmp_path: Path) -> None:
    folder = write(tmp_path / "broken-fn", handler__py="def handle(event, context)\n    pass\n")
    done = faaso("build", str(folder))
    assert done.returncode == 1
    assert f"faaso: {folder / 'handler.py'}, line 1: SyntaxError: expected ':'" in done.stderr
    assert "build.start" not in done.stderr
    listed = subprocess.run(
        ["docker", "images", "-q", "faaso/broken-fn"], capture_output=True, text=True, check=True
    )
    assert listed.stdout.strip() == ""

    (folder / "function.yml").write_text("runtime: cobol\n")
    done = faaso("test", str(folder))
    assert done.returncode == 2
    assert f"faaso: config error: {folder / 'function.yml'}: runtime: no such runtime" in (
        done.stderr
    )


# --------------------------------------------------------------------------- run


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_run_serves_rebuilds_on_change_and_cleans_up(
    tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    folder = copy_function("greet", tmp_path / "greet-run")
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faaso", "run", str(folder), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running.append(proc)

    def answers(expected: bytes) -> Callable[[], bool]:
        def check() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"faaso run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            return http_request(port, "/?name=Ada") == (200, expected)

        return check

    until(answers(b'{"greeting":"hello Ada"}'), "the first build to serve", BUILD_TIMEOUT)
    handler = folder / "handler.js"
    original = handler.read_text()
    handler.write_text(original.replace("greeting: `hello", "greeting: `bonjour"))
    until(answers(b'{"greeting":"bonjour Ada"}'), "the edited handler to serve")

    # A broken save: the error is shown and the last good version keeps serving.
    handler.write_text(original.replace("module.exports = async", "module.exports = = async"))
    until(lambda: "run.build_failed" in log.read_text(), "the build error to be reported")
    assert http_request(port, "/?name=Ada") == (200, b'{"greeting":"bonjour Ada"}')
    assert f"{handler}, line " in log.read_text()
    handler.write_text(original)
    until(answers(b'{"greeting":"hello Ada"}'), "the fixed handler to serve")
    assert "greet-run | faaso node runtime: serving" in log.read_text()  # its output is shown

    proc.send_signal(signal.SIGINT)
    assert proc.wait(DEADLINE) == 0
    assert not dev_containers("greet-run")
    assert http_request(port, "/")[0] == 0


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_run_restarts_without_refusing_a_request(
    tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    """The new container starts and is healthy before the old one stops: requests made all
    through a rebuild-restart get answers, from the old version and then the new."""
    folder = copy_function("sum", tmp_path / "sum-restart")
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faaso", "run", str(folder), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running.append(proc)
    until(lambda: http_request(port, "/?a=2&b=3") == (200, b"5"), "the first build", BUILD_TIMEOUT)

    results: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set() and len(results) < 20000:  # bounded
            results.append(http_request(port, "/?a=2&b=3"))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        handler = folder / "handler.py"
        handler.write_text(handler.read_text() + "\n# an edit: a new image, a restart\n")
        until(
            lambda: log.read_text().count("run.serving") >= 2 and "run.stopped" in log.read_text(),
            "the new container to serve and the old one to be removed",
        )
        during = len(results)
        until(lambda: len(results) > during + 20, "requests after the restart")
    finally:
        stop.set()
        thread.join(30)
    assert log.read_text().count("run.serving") == 2
    failed = [r for r in results if r != (200, b"5")]
    assert not failed, f"{len(failed)} of {len(results)} requests failed, e.g. {failed[:3]}"
    assert len(results) > 40
    proc.send_signal(signal.SIGINT)
    assert proc.wait(DEADLINE) == 0
    assert not dev_containers("sum-restart")


# --------------------------------------------------------------------------- export


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_export_writes_a_loadable_tarball(tmp_path: Path) -> None:
    folder = copy_function("shout", tmp_path / "shout-export")
    out = tmp_path / "shout.tar"
    done = faaso("export", str(folder), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    tag = faaso("build", str(folder)).stdout.strip()
    assert tag in done.stdout
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [tag]

    subprocess.run(["docker", "rmi", tag], capture_output=True, check=True)
    assert not image_exists(tag)
    loaded = subprocess.run(["docker", "load", "-i", str(out)], capture_output=True, text=True)
    assert loaded.returncode == 0 and tag in loaded.stdout, loaded.stderr
    # ...and it runs on its own, as `docker run -p 8080:8080 IMAGE` would.
    port = free_port()
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8080", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        until(lambda: http_request(port, "/_/health")[0] == 200, "the loaded image to answer")
        assert http_request(port, "/", method="POST", body=b"loud")[1] == b"LOUD"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def test_export_refuses_a_folder_as_the_output(tmp_path: Path) -> None:
    done = faaso("export", str(FUNCTIONS / "shout"), str(tmp_path))
    assert done.returncode == 1 and "is a directory" in done.stderr


# --------------------------------------------------------------------------- concurrent builds


@pytest.mark.timeout(BUILD_TIMEOUT)
async def test_one_failing_build_does_not_stop_the_others(
    require_docker: None, tmp_path: Path, made_images: list[str]
) -> None:
    good = copy_function("shout", tmp_path / "shout-ok")
    (good / "build-id.txt").write_text(secrets.token_hex(8))  # really built, beside the bad one
    bad = write(
        tmp_path / "shout-bad",
        function__yml="""
        runtime: dockerfile
        options: {command: cat, apt_packages: [faaso-no-such-package]}
        """,
    )
    catalog = RuntimeCatalog()
    docker = await docker_client.connect()
    try:
        builder = Builder(docker, catalog, get_logger("test"))
        results = await asyncio.gather(
            builder.ensure(load_function_dir(bad, catalog).spec),
            builder.ensure(load_function_dir(good, catalog).spec),
            return_exceptions=True,
        )
    finally:
        await docker.close()
    failure, tag = results
    assert isinstance(tag, str) and tag.startswith("faaso/shout-ok:")
    made_images.append(tag)
    assert isinstance(failure, Exception)
    message = str(failure)
    assert message.startswith("build of function 'shout-bad' failed:")
    assert "Unable to locate package faaso-no-such-package" in message  # the log tail
