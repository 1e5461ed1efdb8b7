"""The function store: OpenFaaS's store format v0.2, from a file, a URL and the one faaso ships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.config.routes_file import load_config
from faaso.config.stack import stack_to_deployments
from faaso.config.store import (
    DEFAULT_STORE,
    load_store,
    read_store_file,
)
from faaso.errors import ConfigError, InvalidRequest
from tests.helpers import ROOT

NODEINFO = {
    "title": "NodeInfo",
    "name": "nodeinfo",
    "description": "Get info about the machine",
    "images": {"x86_64": "ghcr.example/nodeinfo:1", "arm64": "ghcr.example/nodeinfo:1-arm64"},
    "repo_url": "https://example.com/nodeinfo",
    "fprocess": "node main.js",
    "network": "func_functions",
    "environment": {"write_debug": "true"},
    "labels": {"com.openfaas.ui.ext": "json"},
    "annotations": {"topic": "info"},
    "readOnlyRootFilesystem": True,
}


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "store.json"
    path.write_text(json.dumps(doc))
    return path


def test_an_openfaas_store_file(tmp_path: Path) -> None:
    store = read_store_file(write(tmp_path, {"version": "0.2.0", "functions": [NODEINFO]}))
    entry = store.get("nodeinfo")
    assert entry is not None and store.get("other") is None
    assert entry.title == "NodeInfo" and entry.fprocess == "node main.js"
    assert entry.image_for("arm64") == "ghcr.example/nodeinfo:1-arm64"
    assert dict(entry.environment) == {"write_debug": "true"}
    assert entry.read_only_root is True and entry.source is None
    doc = entry.as_json()
    assert doc["images"] == NODEINFO["images"] and doc["repo_url"] == NODEINFO["repo_url"]


def test_the_store_faaso_ships_builds_its_examples() -> None:
    store = read_store_file(DEFAULT_STORE)
    assert [e.name for e in store.functions] == ["sum", "mul", "greet", "shout"]
    runtimes = {e.name: e.runtime for e in store.functions}
    assert runtimes == {"sum": "python", "mul": "python", "greet": "node", "shout": "dockerfile"}
    for entry in store.functions:
        assert entry.source == ROOT / "conf" / "functions" / entry.name
        assert not entry.images


async def test_no_store_key_means_the_shipped_store() -> None:
    assert (await load_store(None)).location == str(DEFAULT_STORE)


def test_the_routes_file_names_the_store(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "handler.py").write_text("def handle(e, c):\n    return 1\n")
    write(tmp_path, {"functions": []})
    routes = tmp_path / "routes.yml"
    routes.write_text("functions:\n  f: {source: f}\nstore: store.json\n")
    assert load_config(routes).store == str(tmp_path / "store.json")
    routes.write_text("functions:\n  f: {source: f}\nstore: http://127.0.0.1:9/store.json\n")
    assert load_config(routes).store == "http://127.0.0.1:9/store.json"
    routes.write_text("functions:\n  f: {source: f}\nstore: missing.json\n")
    with pytest.raises(ConfigError, match="store: is not a file"):
        load_config(routes)
    routes.write_text("functions:\n  f: {source: f}\nstore: ftp://host/store.json\n")
    with pytest.raises(ConfigError, match="must be http:// or https://"):
        load_config(routes)
    assert load_config(ROOT / "conf" / "routes.yml").store == str(DEFAULT_STORE)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "a store is a mapping"),
        ({"version": "0.1.0", "functions": []}, "version: faaso reads store version 0.2.0"),
        ({"functions": {}}, "functions: must be a list"),
        ({"functions": [{"name": "x"}]}, r"functions\[0\]: needs 'images'"),
        ({"functions": [{"name": "Bad", "images": {"x86_64": "i"}}]}, "is not a function name"),
        ({"functions": [{**NODEINFO, "colour": "red"}]}, r"functions\[0\].colour: unknown field"),
        ({"functions": [{**NODEINFO, "images": {"x86_64": "a b"}}]}, "not an image reference"),
        ({"functions": [NODEINFO, NODEINFO]}, r"functions\[1\].name: is listed twice"),
        ({"functions": [{**NODEINFO, "readOnlyRootFilesystem": "yes"}]}, "must be true or false"),
        ({"functions": [{**NODEINFO, "environment": {"A": [1]}}]}, "must be a string or a number"),
        ({"functions": [{"name": "x", "source": "nowhere"}]}, "source: is not a directory"),
        (
            {"functions": [{"name": "x", "source": ".", "images": {"x86_64": "i"}}]},
            "give either images or source",
        ),
    ],
)
def test_bad_stores_name_the_key(tmp_path: Path, doc: Any, message: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=message) as caught:
        read_store_file(path)
    assert caught.value.path == str(path)


def test_a_store_that_is_not_json_or_yaml(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    path.write_text('{"functions": [')
    with pytest.raises(ConfigError, match="invalid JSON/YAML"):
        read_store_file(path)


async def test_a_store_from_a_url() -> None:
    body = {"version": "0.2.0", "functions": [NODEINFO]}

    async def store(request: web.Request) -> web.Response:
        return web.json_response(body)

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/store.json", store)
    app.router.add_get("/missing.json", missing)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/store.json"))
        loaded = await load_store(url)
        assert loaded.location == url and [e.name for e in loaded.functions] == ["nodeinfo"]
        with pytest.raises(ConfigError, match="did not answer 200"):
            await load_store(str(server.make_url("/missing.json")))
        # A store from a URL names images: it cannot point into this machine's folders.
        body["functions"] = [{"name": "x", "source": "/etc"}]
        with pytest.raises(ConfigError, match="a store fetched from a URL must name images"):
            await load_store(url)


def test_a_stack_file_as_deployments() -> None:
    bodies = stack_to_deployments(
        """
version: 1.0
provider: {name: openfaas}
functions:
  hello:
    lang: python3-http
    handler: ./hello
    image: some/hello:1
    environment: {fprocess: python index.py, A: "1"}
    secrets: [api-key]
    limits: {memory: 128Mi}
    readonly_root_filesystem: true
"""
    )
    assert bodies == [
        {
            "service": "hello",
            "image": "some/hello:1",
            "envVars": {"fprocess": "python index.py", "A": "1"},
            "secrets": ["api-key"],
            "limits": {"memory": "128Mi"},
            "readOnlyRootFilesystem": True,
            "envProcess": "python index.py",
        }
    ]
    for text, message in [
        ("functions: {}", "is empty"),
        ("nope: 1", "has a 'functions:' mapping"),
        ("functions: {a: {lang: python}}", "give an image"),
        ("functions: {a: {image: x, colour: red}}", "a.colour: not a stack file function field"),
        ("functions: {a: {image: x, environment_file: [e.yml]}}", "environment_file"),
        ("functions: [", "not valid YAML"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            stack_to_deployments(text)
