"""The routes file's ``async:`` block and the functions' asynchronous keys: the values kept,
and every error naming the file, the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from faaso.config.routes_file import AsyncSettings, load_config
from faaso.errors import ConfigError

FUNCTIONS = "functions:\n  sum: {source: functions/sum}\n"


def make(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "functions" / "sum"
    d.mkdir(parents=True, exist_ok=True)
    (d / "handler.py").write_text("def handle(event, context):\n    return 'ok'\n")
    path = tmp_path / "routes.yml"
    path.write_text(text)
    return path


def test_absent_block_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(make(tmp_path, FUNCTIONS)).async_settings == AsyncSettings()


def test_every_key_is_read(tmp_path: Path) -> None:
    path = make(
        tmp_path,
        FUNCTIONS.replace("}", ", async_concurrency: 3,"
        " annotations: {com.openfaas.retry.attempts: '5', com.openfaas.retry.min_wait: 1s}}")
        + "async:\n"
        "  callback_hosts: [hooks.example.com, '127.0.0.1:9000', '*.example.org', '[::1]:*']\n"
        "  concurrency: 2\n  max_running: 8\n  max_body: 2Mi\n  retention: 60\n"
        "  callback_attempts: 3\n  callback_min_wait: 0.5\n  callback_max_wait: 10\n",
    )  # fmt: skip
    config = load_config(path)
    assert config.async_settings == AsyncSettings(
        callback_hosts=("hooks.example.com", "127.0.0.1:9000", "*.example.org", "[::1]:*"),
        concurrency=2,
        max_running=8,
        max_body=2 * 2**20,
        retention=60.0,
        callback_attempts=3,
        callback_min_wait=0.5,
        callback_max_wait=10.0,
    )
    spec = config.functions["sum"]
    assert spec.async_concurrency == 3
    assert spec.annotations["com.openfaas.retry.attempts"] == "5"


@pytest.mark.parametrize(
    ("block", "key", "value", "fragment"),
    [
        ("async: [1]\n", "async", [1], "mapping"),
        ("async: {concurency: 2}\n", "async.concurency", None, "unknown key"),
        ("async: {callback_hosts: hooks.example.com}\n", "async.callback_hosts",
         "hooks.example.com", "must be a list"),
        ("async: {callback_hosts: ['bad host']}\n", "async.callback_hosts", "bad host",
         "host or host:port"),
        ("async: {callback_hosts: ['h:99999']}\n", "async.callback_hosts", "h:99999",
         "host or host:port"),
        ("async: {callback_hosts: [3]}\n", "async.callback_hosts", 3, "host or host:port"),
        ("async: {concurrency: 0}\n", "async.concurrency", 0, "whole number from 1"),
        ("async: {concurrency: true}\n", "async.concurrency", True, "whole number"),
        ("async: {max_running: 2.5}\n", "async.max_running", 2.5, "whole number"),
        ("async: {max_body: lots}\n", "async.max_body", "lots", "write e.g. 1Mi"),
        ("async: {max_body: 65Mi}\n", "async.max_body", "65Mi", "64Mi"),
        ("async: {max_body: 0}\n", "async.max_body", 0, "1 byte"),
        ("async: {retention: -1}\n", "async.retention", -1, ""),
        ("async: {callback_attempts: 0}\n", "async.callback_attempts", 0, "whole number"),
        ("async: {callback_min_wait: x}\n", "async.callback_min_wait", "x", ""),
        ("async: {callback_min_wait: 5, callback_max_wait: 1}\n", "async.callback_max_wait",
         1, "must not be shorter than async.callback_min_wait"),
    ],
)  # fmt: skip
def test_async_block_errors_name_file_key_and_value(
    tmp_path: Path, block: str, key: str, value: object, fragment: str
) -> None:
    path = make(tmp_path, FUNCTIONS + block)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.path, err.key) == (str(path), key)
    if value is not None:
        assert err.value == value
    assert fragment in str(err)
    assert str(path) in str(err)


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        ("async_concurrency: 0", "functions.sum.async_concurrency", "whole number from 1"),
        ("annotations: {com.openfaas.retry.attempts: lots}",
         "functions.sum.annotations.com.openfaas.retry.attempts", "whole number"),
        ("annotations: {com.openfaas.retry.codes: '429 teapot'}",
         "functions.sum.annotations.com.openfaas.retry.codes", "HTTP status codes"),
        ("annotations: {com.openfaas.retry.min_wait: soon}",
         "functions.sum.annotations.com.openfaas.retry.min_wait", "not a duration"),
        ("annotations: {com.openfaas.retry.min_wait: 1m, com.openfaas.retry.max_wait: 1s}",
         "functions.sum.annotations.com.openfaas.retry.max_wait", "not be shorter"),
        ("annotations: {faaso.async.concurrency: '0'}",
         "functions.sum.annotations.faaso.async.concurrency", "whole number from 1"),
    ],
)  # fmt: skip
def test_function_async_keys_errors(tmp_path: Path, extra: str, key: str, fragment: str) -> None:
    path = make(tmp_path, FUNCTIONS.replace("}", f", {extra}}}"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)
    assert fragment in str(info.value)
