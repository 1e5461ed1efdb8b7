"""Runtimes, function folders and the checks made before any build: no engine needed.

Every error case here is caught on the host, before an image is built: the tests call the same
functions the builder calls first (``load_function_dir``, ``plan``, ``check_sources``) and the
CLI commands that need no engine (``faaso new``, ``faaso runtimes``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from multidict import CIMultiDict

from faaso.build.builder import check_sources, dockerfile_string, plan
from faaso.config.runtimes import RuntimeCatalog, TestCase, load_function_file
from faaso.dev.loop import check_response, json_equal, load_function_dir, new_function
from faaso.errors import BuildError, ConfigError, DevError, SourceError
from faaso.spec.function import FunctionSpec
from tests.helpers import ROOT

BASE = "sha256:" + "0" * 64
RUNTIMES = ("python", "node", "dockerfile")


def faaso(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faaso", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def check(folder: Path, runtime: str | None = None, catalog: RuntimeCatalog | None = None) -> str:
    """What the builder does before building: load, plan, check. Returns the tag."""
    catalog = catalog or RuntimeCatalog()
    fdir = load_function_dir(folder, catalog, runtime)
    build_plan = plan(fdir.spec, catalog, BASE)
    asyncio.run(check_sources(build_plan))
    return build_plan.tag


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name.replace("__", ".")
        path.write_text(textwrap.dedent(text))
    return folder


# --------------------------------------------------------------------------- the catalog


def test_shipped_runtimes_are_listed_with_their_description() -> None:
    catalog = RuntimeCatalog()
    assert set(RUNTIMES) <= set(catalog.names())
    for name in RUNTIMES:
        runtime = catalog.find(name)
        assert runtime is not None and runtime.description, name
        assert (runtime.path / "template").is_dir(), name
    done = faaso("runtimes")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(RUNTIMES) <= set(lines)
    assert "Node.js 18" in lines["node"]


def test_a_runtime_folder_of_ones_own_comes_first(tmp_path: Path) -> None:
    mine = tmp_path / "rt"
    write(mine / "python", runtime__yml="description: my own python\n")
    write(mine / "shell", runtime__yml="description: a shell runtime\n")
    done = faaso("runtimes", "--runtimes", str(mine))
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "my own python" in lines["python"] and str(mine) in lines["python"]
    assert "a shell runtime" in lines["shell"]
    assert "Node.js" in lines["node"]  # the built-in ones are still there


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("check: cobol\n", "check"),
        ("npm: [package.json]\n", "npm"),
        ("own_dockerfile: a/Dockerfile\n", "own_dockerfile"),
        ("colour: blue\n", "colour"),
    ],
)
def test_bad_runtime_yml_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    write(tmp_path / "rt" / "odd", runtime__yml=text)
    with pytest.raises(ConfigError) as info:
        RuntimeCatalog((tmp_path / "rt",)).find("odd")
    assert info.value.key == key
    assert info.value.path.endswith("runtime.yml")


# --------------------------------------------------------------------------- faaso new


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_new_function_from_each_runtime_passes_the_checks(tmp_path: Path, runtime: str) -> None:
    done = faaso("new", "my-fn", "--runtime", runtime, "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "my-fn"
    assert load_function_file(folder).runtime == runtime
    fdir = load_function_dir(folder, RuntimeCatalog())  # no --runtime: function.yml says it
    assert (fdir.name, fdir.runtime.name) == ("my-fn", runtime)
    assert fdir.tests, "every starter carries tests"
    check(folder)
    # The starter is not overwritten by a second `new`.
    again = faaso("new", "my-fn", "--runtime", runtime, "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_new_refuses_bad_names_and_unknown_runtimes(tmp_path: Path) -> None:
    with pytest.raises(DevError, match="not a valid function name"):
        new_function("Bad_Name", "python", tmp_path, RuntimeCatalog())
    with pytest.raises(DevError, match=r"no runtime 'cobol'; available: .*node"):
        new_function("fine", "cobol", tmp_path, RuntimeCatalog())
    assert not list(tmp_path.iterdir())


def test_the_folder_name_is_the_function_name(tmp_path: Path) -> None:
    fdir = load_function_dir(
        write(tmp_path / "Sum2", handler__py="handle = print\n"), RuntimeCatalog()
    )
    assert fdir.name == "sum2"
    with pytest.raises(DevError, match="comes from its folder's name"):
        load_function_dir(write(tmp_path / "my_fn", handler__py="x=1\n"), RuntimeCatalog())
    with pytest.raises(DevError, match="no such directory"):
        load_function_dir(tmp_path / "absent", RuntimeCatalog())


# --------------------------------------------------------------------------- bad input


def test_unknown_runtime_in_function_yml_names_the_file(tmp_path: Path) -> None:
    folder = write(tmp_path / "fn", function__yml="runtime: cobol\n", handler__py="")
    with pytest.raises(ConfigError) as info:
        check(folder)
    assert info.value.key == "runtime" and info.value.path == str(folder / "function.yml")
    assert "no such runtime; available: dockerfile, node, python" in str(info.value)


def test_unknown_runtime_on_the_command_line(tmp_path: Path) -> None:
    folder = write(tmp_path / "fn", handler__py="def handle(e, c): pass\n")
    with pytest.raises(DevError, match="no runtime 'cobol'"):
        check(folder, runtime="cobol")
    # and a routes file's runtime that does not exist, at build time
    with pytest.raises(BuildError, match="runtime 'cobol' not found"):
        plan(FunctionSpec(name="fn", source=folder, runtime="cobol"), RuntimeCatalog(), BASE)


def test_runtime_disagreements_are_errors(tmp_path: Path) -> None:
    folder = write(tmp_path / "fn", function__yml="runtime: node\n", handler__js="")
    with pytest.raises(ConfigError, match="--runtime python was asked for"):
        check(folder, runtime="python")
    spec = FunctionSpec(name="fn", source=folder, runtime="python")  # a routes file's choice
    with pytest.raises(ConfigError, match="built with the python runtime here"):
        plan(spec, RuntimeCatalog(), BASE)


@pytest.mark.parametrize(
    ("runtime", "files", "missing"),
    [
        ("python", {"helper__py": "x = 1\n"}, "handler.py"),
        ("node", {"index__js": "module.exports = 1;\n"}, "handler.js"),
    ],
)
def test_a_missing_handler_is_named(
    tmp_path: Path, runtime: str, files: dict[str, str], missing: str
) -> None:
    folder = write(tmp_path / "fn", **files)
    with pytest.raises(SourceError) as info:
        check(folder, runtime=runtime)
    assert info.value.path == folder / missing
    assert f"missing: the {runtime} runtime needs this file" in str(info.value)


def test_a_python_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    handler = "import json\n\n\ndef handle(event, context)\n    return 1\n"
    folder = write(tmp_path / "fn", handler__py=handler, helper__py="x = 1\n")
    with pytest.raises(SourceError) as info:
        check(folder)
    assert (info.value.path, info.value.line) == (folder / "handler.py", 4)
    message = str(info.value)
    assert message.startswith(f"{folder / 'handler.py'}, line 4: SyntaxError: expected ':'")
    assert "def handle(event, context)\n" in message
    # a sibling module is checked too
    (folder / "handler.py").write_text("from helper import x\n\ndef handle(e, c):\n    return x\n")
    (folder / "helper.py").write_text("x = (1,\n")
    with pytest.raises(SourceError) as info:
        check(folder)
    assert info.value.path == folder / "helper.py" and info.value.line == 1


@pytest.mark.parametrize(
    ("handler", "ok"),
    [
        ("def handler(event, context):\n    return 1\n", False),
        ("handle = 3\nhandle: int = 4\n", True),
        ("async def handle(event, context):\n    return 1\n", True),
        ("from lib import handle\n", True),
        ("from lib import *\n", True),
        ("import os\n", False),
        ("try:\n    from fast import handle\nexcept ImportError:\n    pass\n", True),
    ],
)
def test_a_handler_without_handle_is_refused(tmp_path: Path, handler: str, ok: bool) -> None:
    folder = write(tmp_path / "fn", handler__py=handler)
    if ok:
        check(folder)
        return
    with pytest.raises(SourceError, match=r"defines no handle\(event, context\)"):
        check(folder)


@pytest.mark.parametrize(
    ("handler", "problem", "line"),
    [
        ("from .helpers import shout\n", None, None),
        ("from . import helpers\n", None, None),
        ("from .lib.words import WORD\n", None, None),
        ("from .lib import words\n", None, None),
        ("from .loose import anything\n", None, None),  # star import there: cannot tell
        ("x = 1\nfrom .helperz import shout\n", "no helperz.py (nor a package", 2),
        ("from .helpers import shoutt\n", "cannot import name 'shoutt' from .helpers", 1),
        ("from .lib.nope import x\n", "no lib/nope.py", 1),
        ("from .. import x\n", "goes above the function's folder", 1),
        ("from . import nothing_here\n", "cannot import name 'nothing_here' from .", 1),
    ],
)
def test_relative_imports_that_would_fail_are_named_before_a_build(
    tmp_path: Path, handler: str, problem: str | None, line: int | None
) -> None:
    folder = write(
        tmp_path / "fn",
        handler__py=handler + "\ndef handle(event, context):\n    return 1\n",
        helpers__py="import os\nif os.environ.get('X'):\n    def shout(t):\n        return t\n",
        loose__py="from os.path import *\n",
    )
    (folder / "__init__.py").write_text("")
    (folder / "lib").mkdir()
    (folder / "lib" / "__init__.py").write_text("")
    (folder / "lib" / "words.py").write_text("from ..helpers import shout\nWORD = 'hi'\n")
    if problem is None:
        check(folder)
        return
    with pytest.raises(SourceError) as info:
        check(folder)
    assert (info.value.path, info.value.line) == (folder / "handler.py", line)
    assert problem in str(info.value)
    assert "ImportError" in str(info.value)


@pytest.mark.skipif(shutil.which("node") is None, reason="node checks need node on the host")
def test_a_node_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    handler = "'use strict';\nmodule.exports = async (event) => {\n  return {a: 1,,};\n};\n"
    folder = write(tmp_path / "fn", handler__js=handler)
    with pytest.raises(SourceError) as info:
        check(folder, runtime="node")
    assert (info.value.path, info.value.line) == (folder / "handler.js", 3)
    assert "SyntaxError: Unexpected token ','" in str(info.value)
    (folder / "handler.js").write_text("module.exports = async () => 1;\n")
    (folder / "package.json").write_text("{not json")
    with pytest.raises(SourceError, match="not valid JSON") as info2:
        check(folder, runtime="node")
    assert info2.value.path == folder / "package.json"


def test_dockerfile_runtime_needs_a_dockerfile_or_a_command(tmp_path: Path) -> None:
    folder = write(tmp_path / "fn", function__yml="runtime: dockerfile\n")
    with pytest.raises(ConfigError) as info:
        check(folder)
    assert info.value.key == "options.command"
    assert "needs either a Dockerfile" in str(info.value)

    (folder / "function.yml").write_text("runtime: dockerfile\noptions: {command: ./run.sh}\n")
    with pytest.raises(SourceError, match=r"missing: options.command runs \./run\.sh"):
        check(folder)
    (folder / "run.sh").write_text("#!/bin/sh\ncat\n")
    with pytest.raises(SourceError, match=r"is not executable \(chmod \+x run.sh\)"):
        check(folder)
    os.chmod(folder / "run.sh", 0o755)
    check(folder)

    (folder / "Dockerfile").write_text("# comment\nRUN true\nFROM x\n")
    with pytest.raises(ConfigError, match="is for functions without a Dockerfile"):
        check(folder)
    (folder / "function.yml").write_text("runtime: dockerfile\n")
    with pytest.raises(SourceError) as info2:
        check(folder)
    assert (info2.value.path, info2.value.line) == (folder / "Dockerfile", 2)
    assert "the first instruction must be FROM, not RUN" in str(info2.value)
    (folder / "Dockerfile").write_text("ARG BASE=faaso/debian:bookworm\nFROM $BASE\n")
    check(folder)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("wat: 1\n", "wat"),
        ("options: {nope: 1}\n", "options.nope"),
        ("options: {apt_packages: curl}\n", "options.apt_packages"),
        ("options: {apt_packages: [1]}\n", "options.apt_packages"),
        ("runtime: [python]\n", "runtime"),
        ("tests: {request: {}}\n", "tests"),
        ("tests: [[1]]\n", "tests[0]"),
        ("tests: [{request: {path: /}}]\n", "tests[0].expect"),
        ("tests: [{request: {path: /}, expect: {status: 200}, extra: 1}]\n", "tests[0].extra"),
        ("tests: [{request: {url: /}, expect: {status: 200}}]\n", "tests[0].request.url"),
        ("tests: [{request: {method: FETCH}, expect: {status: 200}}]\n", "tests[0].request.method"),
        ("tests: [{request: {path: x}, expect: {status: 200}}]\n", "tests[0].request.path"),
        ("tests: [{request: {body: [1]}, expect: {status: 200}}]\n", "tests[0].request.body"),
        ("tests: [{request: {headers: [a]}, expect: {status: 200}}]\n", "tests[0].request.headers"),
        ("tests: [{request: {}, expect: {status: 999}}]\n", "tests[0].expect.status"),
        ("tests: [{request: {}, expect: {body: 5}}]\n", "tests[0].expect.body"),
        ("tests: [{request: {}, expect: {colour: red}}]\n", "tests[0].expect.colour"),
        ("tests: [{request: {}, expect: {headers: {X: [1]}}}]\n", "tests[0].expect.headers.X"),
        ("tests:\n- request: {}\n  expect: {status: 200}\n  expect: {status: 201}\n", ""),
        ("tests: [\n", ""),
    ],
)
def test_a_bad_function_yml_is_named_before_any_build(tmp_path: Path, text: str, key: str) -> None:
    folder = write(tmp_path / "fn", function__yml=text, handler__py="def handle(e, c): pass\n")
    with pytest.raises(ConfigError) as info:
        check(folder)
    assert info.value.key == key, info.value
    assert info.value.path == str(folder / "function.yml")


def test_yaml_errors_say_where(tmp_path: Path) -> None:
    folder = write(tmp_path / "fn", function__yml="description: x\ntests: [\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: .* \(got .line 3, column 1.\)"):
        load_function_file(folder)
    (folder / "function.yml").write_text("description: a\ndescription: b\n")
    with pytest.raises(ConfigError, match="duplicate key 'description'"):
        load_function_file(folder)


def test_tests_are_parsed_with_their_defaults(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "fn",
        function__yml="""
        tests:
          - request: {path: "/?a=1"}
            expect: {status: 200}
          - request: {method: post, body: "[1]", headers: {X-A: 1}}
            expect: {json: null, headers: {Content-Type: application/json}}
        """,
    )
    first, second = load_function_file(folder).tests
    assert (first.method, first.path, first.body, first.status) == ("GET", "/?a=1", None, 200)
    assert not first.has_json
    assert (second.method, second.path, second.body) == ("POST", "/", b"[1]")
    assert dict(second.headers) == {"X-A": "1"}
    assert second.has_json and second.expect_json is None


# --------------------------------------------------------------------------- build plans


def test_function_yml_is_not_part_of_the_image(tmp_path: Path) -> None:
    folder = tmp_path / "sum"
    shutil.copytree(ROOT / "conf" / "functions" / "sum", folder)
    catalog = RuntimeCatalog()
    fdir = load_function_dir(folder, catalog)
    first = plan(fdir.spec, catalog, BASE)
    assert "function/function.yml" not in first.files
    text = (folder / "function.yml").read_text().replace('body: "5"', 'body: "6"')
    (folder / "function.yml").write_text(text)  # editing a test does not make a new image
    assert plan(fdir.spec, catalog, BASE).tag == first.tag
    (folder / "function.yml").write_text(text + "options: {apt_packages: [jq]}\n")
    assert plan(fdir.spec, catalog, BASE).tag != first.tag  # options are hashed


def test_own_dockerfile_makes_the_folder_the_context(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "own",
        Dockerfile="FROM faaso/debian:bookworm\nCOPY www /www\n",
        function__yml="runtime: dockerfile\n",
    )
    write(folder / "www", index__html="hi\n")
    catalog = RuntimeCatalog()
    build_plan = plan(load_function_dir(folder, catalog).spec, catalog, BASE)
    assert sorted(build_plan.files) == ["Dockerfile", "www/index.html"]
    assert build_plan.own_dockerfile and not build_plan.wheel_sets and not build_plan.npm_sets


def test_command_mode_renders_the_watchdog_image(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "cmd",
        function__yml="""
        runtime: dockerfile
        options: {command: "printf '%s' \\"$Http_Query\\"", exec_timeout: 2.5}
        """,
    )
    catalog = RuntimeCatalog()
    build_plan = plan(load_function_dir(folder, catalog).spec, catalog, BASE)
    dockerfile = build_plan.files["Dockerfile"]
    assert isinstance(dockerfile, bytes)
    assert "watchdog.c" in build_plan.files
    assert b'ENV fprocess="printf \'%s\' \\"\\$Http_Query\\""' in dockerfile
    assert b"FAASO_EXEC_TIMEOUT=2.5" in dockerfile
    assert b"COPY function/" not in dockerfile  # nothing of its own to copy


def test_dockerfile_string_escapes() -> None:
    assert dockerfile_string('a "b" $HOME \\ c') == '"a \\"b\\" \\$HOME \\\\ c"'
    assert dockerfile_string("two\nlines") == '"two lines"'


# --------------------------------------------------------------------------- expectations


def test_check_response_says_what_differs() -> None:
    case = TestCase(
        index=0,
        status=200,
        expect_body="5",
        has_json=True,
        expect_json=5,
        expect_headers={"Content-Type": "application/json"},
    )
    good = CIMultiDict({"content-type": "application/json"})
    assert check_response(case, 200, good, b"5") == ()
    problems = check_response(case, 500, CIMultiDict({"Content-Type": "text/plain"}), b"6")
    assert problems == (
        "status 500, expected 200",
        "body '6', expected '5'",
        "JSON 6, expected 5",
        "header Content-Type: text/plain, expected application/json",
    )
    assert check_response(case, 200, CIMultiDict(), b"nope")[1:] == (
        "body 'nope' is not JSON, expected 5",
        "header Content-Type: missing, expected application/json",
    )


def test_json_equality_is_json_s() -> None:
    assert json_equal(5, 5.0) and json_equal({"a": [1, None]}, {"a": [1.0, None]})
    assert not json_equal(True, 1) and not json_equal([1], [True]) and not json_equal(0, False)
    assert not json_equal({"a": 1}, {"a": 1, "b": 2}) and not json_equal("1", 1)


# --------------------------------------------------------------------------- in-image servers
# The node runtime's server.js and the dockerfile runtime's watchdog, run on the host (node and
# a C compiler are there), like tests/test_runtime_python.py runs the python server.

NODE_SERVER = ROOT / "runtimes" / "node" / "server.js"
WATCHDOG_C = ROOT / "runtimes" / "dockerfile" / "watchdog.c"

NODE_HANDLER = """
const fs = require("fs");
const path = require("path");
const VALUES = {
  str: "héllo", buf: Buffer.from([0, 1, 255]), obj: { a: 1, b: [true, null] }, list: [1, "x"],
  num: 42, bool: true, none: null,
  status: { statusCode: 201, body: "made",
            headers: { "X-Made": "yes", "Set-Cookie": ["a=1", "b=2"] } },
  statusJson: { statusCode: 422, body: { why: "bad" } },
  typed: { statusCode: 200, body: Buffer.from("PNG"), headers: { "content-type": "image/png" } },
  nan: NaN, badStatus: { statusCode: "200" }, fn: () => 1,
};
module.exports = async (event, context) => {
  const kind = event.query.kind;
  if (kind === "event") {
    return { method: event.method, path: event.path, query: event.query,
             all: event.queryAll.getAll("a"), header: event.headers["x-test"],
             size: event.body.length, first: event.body[0], host: context.hostname.length > 0 };
  }
  if (kind === "throw") throw new RangeError("boom");
  if (kind === "slow") {
    fs.writeFileSync(path.join(__dirname, "started"), "");
    while (!fs.existsSync(path.join(__dirname, "release"))) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return "done";
  }
  return VALUES[kind];
};
"""


def _request(
    port: int, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        got: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            got[key] = f"{got[key]}, {value}" if key in got else value
        return resp.status, got, resp.read()
    finally:
        conn.close()


def _serving(proc: subprocess.Popen[bytes], port: int) -> None:
    import time

    end = time.monotonic() + 10
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if _request(port, "GET", "/_/health")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < end, "the server never answered /_/health"
        time.sleep(0.01)  # poll with a deadline


def _refuses(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


Spawn = Callable[..., tuple[subprocess.Popen[bytes], int]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], **env: str) -> tuple[subprocess.Popen[bytes], int]:
        from tests.helpers import free_port

        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("FAASO_")}
        proc = subprocess.Popen(
            argv,
            env={**base, "PORT": str(port), "FAASO_HOST": "127.0.0.1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        procs.append(proc)
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node on the host")
def test_node_server_contract(spawn: Spawn, tmp_path: Path) -> None:
    import json
    import signal
    import threading
    import time

    folder = write(tmp_path / "fn", handler__js=NODE_HANDLER)
    proc, port = spawn(
        ["node", str(NODE_SERVER)],
        FAASO_FUNCTION_DIR=str(folder),
        FAASO_MAX_BODY="100000",
        FAASO_DEBUG="1",
    )
    _serving(proc, port)
    text, js = "text/plain; charset=utf-8", "application/json"
    cases = [
        ("str", 200, text, "héllo".encode()),
        ("buf", 200, "application/octet-stream", b"\x00\x01\xff"),
        ("obj", 200, js, b'{"a":1,"b":[true,null]}'),
        ("list", 200, js, b'[1,"x"]'),
        ("num", 200, js, b"42"),
        ("bool", 200, js, b"true"),
        ("none", 200, None, b""),
        ("status", 201, text, b"made"),
        ("statusJson", 422, js, b'{"why":"bad"}'),
        ("typed", 200, "image/png", b"PNG"),
    ]
    for kind, status, ctype, body in cases:
        got_status, headers, got = _request(port, "GET", f"/?kind={kind}")
        assert (got_status, got) == (status, body), kind
        assert headers.get("content-type") == ctype, kind
    headers = _request(port, "GET", "/?kind=status")[1]
    assert headers["x-made"] == "yes" and headers["set-cookie"] == "a=1, b=2"
    for kind, error_type in [
        ("throw", "RangeError"),
        ("nan", "TypeError"),
        ("badStatus", "TypeError"),
        ("fn", "TypeError"),
    ]:
        status, headers, body = _request(port, "GET", f"/?kind={kind}")
        assert (status, json.loads(body)["type"]) == (500, error_type), kind
    thrown = json.loads(_request(port, "GET", "/?kind=throw", None, **{"X-Call-Id": "c-9"})[2])
    assert (thrown["error"], thrown["call_id"]) == ("boom", "c-9")
    assert "RangeError: boom" in thrown["traceback"]

    status, _, body = _request(
        port, "POST", "/a/b%20c?kind=event&a=1&a=2", b"\x07" * 5000, **{"X-Test": "yes"}
    )
    assert status == 200
    assert json.loads(body) == {
        "method": "POST",
        "path": "/a/b c",
        "query": {"kind": "event", "a": "1"},
        "all": ["1", "2"],
        "header": "yes",
        "size": 5000,
        "first": 7,
        "host": True,
    }
    assert _request(port, "POST", "/?kind=str", b"x" * 100001)[0] == 413

    # SIGTERM: stop listening, finish the request in flight, exit 0.
    result: dict[str, tuple[int, dict[str, str], bytes]] = {}
    slow = threading.Thread(target=lambda: result.update(r=_request(port, "GET", "/?kind=slow")))
    slow.start()
    end = time.monotonic() + 10
    while not (folder / "started").exists():
        assert time.monotonic() < end
        time.sleep(0.01)  # poll with a deadline
    proc.send_signal(signal.SIGTERM)
    while not _refuses(port):
        assert time.monotonic() < end
        time.sleep(0.01)  # poll with a deadline
    assert proc.poll() is None  # still finishing the slow request
    (folder / "release").touch()
    slow.join(10)
    status, _, body = result["r"]
    assert (status, body) == (200, b"done")
    assert proc.wait(10) == 0


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node on the host")
def test_node_errors_reach_the_client_only_in_debug_mode(spawn: Spawn, tmp_path: Path) -> None:
    import json

    folder = write(tmp_path / "fn", handler__js=NODE_HANDLER)
    proc, port = spawn(["node", str(NODE_SERVER)], FAASO_FUNCTION_DIR=str(folder))
    _serving(proc, port)
    status, headers, body = _request(port, "GET", "/?kind=throw", None, **{"X-Call-Id": "call-7"})
    assert (status, headers["x-call-id"]) == (500, "call-7")
    assert json.loads(body) == {
        "error": "the function failed; its traceback is in the container's log "
        "under call id call-7",
        "call_id": "call-7",
    }
    assert b"boom" not in body and b"RangeError" not in body
    status, headers, body = _request(port, "GET", "/?kind=nan")  # no call id: one is made
    assert (status, json.loads(body)["call_id"]) == (500, headers["x-call-id"])
    assert len(headers["x-call-id"]) == 36
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "call call-7: GET /?kind=throw failed:" in err.decode()
    assert "RangeError: boom" in err.decode()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node on the host")
@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (None, "no handler.js in"),
        ("module.exports = {;\n", "failed: SyntaxError"),
        ("throw new Error('no config');\n", "failed: Error: no config"),
        ("module.exports = { handler: () => 1 };\n", "exports no function"),
    ],
)
def test_node_server_refuses_a_broken_handler(
    tmp_path: Path, handler: str | None, message: str
) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    if handler is not None:
        (folder / "handler.js").write_text(handler)
    done = subprocess.run(
        ["node", str(NODE_SERVER)],
        env={**os.environ, "FAASO_FUNCTION_DIR": str(folder), "PORT": "1"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode != 0
    assert "faaso node runtime:" in done.stderr and message in done.stderr, done.stderr


@pytest.fixture(scope="module")
def watchdog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc on the host")
    out = tmp_path_factory.mktemp("watchdog") / "watchdog"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(WATCHDOG_C)],
        check=True,
        capture_output=True,
    )
    return out


# The command's sleeps are its own work: ``slow`` polls (with the test's deadline) for the
# release file the test writes; ``hang`` never answers in time (the watchdog's timeout ends it).
WATCHDOG_COMMAND = """case "$Http_Query" in
  slow) : > started; while [ ! -e release ]; do sleep 0.01; done; echo slow done ;;
  hang) sleep 30 ;;
  *) tr a-z A-Z ;;
esac"""


def test_watchdog_contract(spawn: Spawn, watchdog: Path, tmp_path: Path) -> None:
    import signal
    import socket
    import threading
    import time

    proc, port = spawn(
        [str(watchdog)],
        fprocess=WATCHDOG_COMMAND,
        FAASO_EXEC_TIMEOUT="1",
        FAASO_MAX_BODY="1000",
    )
    _serving(proc, port)
    # keep-alive, a chunked body and Expect: 100-continue on one connection
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
        )
        sock.sendall(b"GET /_/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3 and b"HTTP/1.1 100 Continue" in data
    assert b"\r\n\r\nABC" in data and b"\r\n\r\nDEF" in data and data.endswith(b'{"status":"ok"}')

    assert _request(port, "POST", "/", b"x" * 1001)[0] == 413
    status, _, body = _request(port, "GET", "/?hang")
    assert (status, body) == (504, b"the function ran longer than 1 s and was stopped\n")

    # SIGTERM: stop listening, finish the request in flight, exit 0.
    result: dict[str, tuple[int, dict[str, str], bytes]] = {}
    slow = threading.Thread(target=lambda: result.update(r=_request(port, "GET", "/?slow")))
    slow.start()
    end = time.monotonic() + 10
    while not (tmp_path / "started").exists():
        assert time.monotonic() < end
        time.sleep(0.01)  # poll with a deadline
    proc.send_signal(signal.SIGTERM)
    while not _refuses(port):
        assert time.monotonic() < end
        time.sleep(0.01)  # poll with a deadline
    assert proc.poll() is None
    (tmp_path / "release").touch()
    slow.join(10)
    status, headers, body = result["r"]
    assert (status, body, headers["connection"]) == (200, b"slow done\n", "close")
    assert proc.wait(10) == 0


def test_watchdog_needs_a_command(watchdog: Path) -> None:
    done = subprocess.run([str(watchdog)], env={}, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "set fprocess" in done.stderr
