"""CORS policies from the routes file (top-level and per function) and from an API
deployment's annotations, validated in one place: errors name the file, the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from faaso.config.cors import cors_table
from faaso.config.deployment import deployment_to_spec
from faaso.config.routes_file import load_config
from faaso.errors import ConfigError, InvalidRequest
from faaso.spec.cors import DEFAULT_METHODS, CorsPolicy


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yml"
    path.write_text(text)
    return path


FUNCTIONS = """
functions:
  a: {image: "x/a:1"}
  b: {image: "x/b:1", cors: {allow_origins: ["https://b.example"], allow_methods: [get]}}
  c: {image: "x/c:1", cors: false}
  d: {image: "x/d:1", annotations: {faaso.cors.allow_origins: "https://d.example, https://e.example",
       faaso.cors.allow_credentials: "true", faaso.cors.max_age: "60"}}
"""


def test_top_level_and_per_function(tmp_path: Path) -> None:
    config = load_config(
        _file(
            tmp_path,
            """
cors:
  allow_origins: ["https://App.Example.com", "http://localhost:3000"]
  allow_headers: [Content-Type, X-Token]
  expose_headers: [X-Call-Id]
  max_age: 600
  allow_credentials: true
"""
            + FUNCTIONS,
        )
    )
    top = CorsPolicy(
        allow_origins=("https://app.example.com", "http://localhost:3000"),
        allow_methods=DEFAULT_METHODS,
        allow_headers=("content-type", "x-token"),
        expose_headers=("X-Call-Id",),
        max_age=600,
        allow_credentials=True,
    )
    assert config.cors == top
    table = cors_table(config.cors, config.function_cors, config.functions)
    assert table["a"] == top  # inherits the file's
    assert table["b"] == CorsPolicy(allow_origins=("https://b.example",), allow_methods=("GET",))
    assert "c" not in table  # cors: false
    assert table["d"] == CorsPolicy(
        allow_origins=("https://d.example", "https://e.example"),
        max_age=60,
        allow_credentials=True,
    )


def test_no_cors_block_means_no_policy(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path, 'functions:\n  a: {image: "x/a:1"}\n'))
    assert config.cors is None
    assert dict(cors_table(config.cors, config.function_cors, config.functions)) == {}


@pytest.mark.parametrize(
    ("block", "key", "value"),
    [
        ("cors: {allow_methods: [GET]}", "cors.allow_origins", "None"),
        ("cors: {allow_origins: [https://a.example/path]}", "cors.allow_origins", "path"),
        ("cors: {allow_origins: ['*'], allow_credentials: true}", "cors.allow_origins", "'*'"),
        ("cors: {allow_origins: ['*'], max_age: -1}", "cors.max_age", "-1"),
        (
            "cors: {allow_origins: ['*'], allow_credentials: yes please}",
            "cors.allow_credentials",
            "yes please",
        ),
        (
            "cors: {allow_origins: ['*'], allow_headers: ['bad header']}",
            "cors.allow_headers",
            "bad header",
        ),
        ("cors: {allow_origins: ['*'], expose: [x]}", "cors.expose", "expose"),
        (
            "cors: {allow_origins: ['*'], expose_headers: ['x y']}",
            "cors.expose_headers",
            "x y",
        ),
        ("cors: [https://a.example]", "cors", "https://a.example"),
        ("cors: false", "cors", "False"),
    ],
)
def test_errors_name_file_key_and_value(tmp_path: Path, block: str, key: str, value: str) -> None:
    path = _file(tmp_path, block + '\nfunctions:\n  a: {image: "x/a:1"}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == str(path)
    assert caught.value.key == key
    assert value in repr(caught.value.value) or value in str(caught.value)


def test_function_block_and_annotation_errors(tmp_path: Path) -> None:
    path = _file(tmp_path, 'functions:\n  a: {image: "x/a:1", cors: {allow_origins: ftp://x}}\n')
    with pytest.raises(ConfigError, match=r"functions\.a\.cors\.allow_origins"):
        load_config(path)
    path = _file(
        tmp_path,
        'functions:\n  a: {image: "x/a:1", annotations: '
        '{faaso.cors.allow_origins: "*", faaso.cors.max_age: soon}}\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "functions.a.annotations.faaso.cors.max_age"
    assert caught.value.value == "soon"


def test_api_deployment_annotations() -> None:
    spec = deployment_to_spec(
        {
            "service": "web",
            "image": "x/web:1",
            "annotations": {
                "faaso.cors.allow_origins": "https://web.example",
                "faaso.cors.allow_methods": "GET,POST",
            },
        }
    )
    table = cors_table(None, {}, {"web": spec})
    assert table["web"] == CorsPolicy(
        allow_origins=("https://web.example",), allow_methods=("GET", "POST")
    )
    with pytest.raises(InvalidRequest, match=r"faaso\.cors\.allow_origins"):
        deployment_to_spec(
            {
                "service": "web",
                "image": "x/web:1",
                "annotations": {"faaso.cors.allow_origins": "web.example"},
            }
        )
