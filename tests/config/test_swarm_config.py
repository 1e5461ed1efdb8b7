"""The routes file's ``swarm:`` block and registry login: validated, the password never inline."""

from __future__ import annotations

from pathlib import Path

import pytest

from faaso.config.routes_file import load_config
from faaso.errors import ConfigError


def routes(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "routes.yml"
    path.write_text(f"functions: {{}}\n{extra}")
    return path


def test_cluster_and_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    config = load_config(
        routes(
            tmp_path,
            "swarm: {cluster: prod-1, autoscaler: true}\n"
            "registry: {address: 127.0.0.1:5000, username: me, password_file: pw}\n",
        )
    )
    assert (config.swarm.cluster, config.swarm.autoscaler) == ("prod-1", True)
    assert config.registry == "127.0.0.1:5000"
    assert config.registry_login is not None and config.registry_login.password() == "hunter2"
    assert "hunter2" not in repr(config)
    monkeypatch.setenv("FAASO_TEST_PW", "from-env")
    config = load_config(
        routes(
            tmp_path, "registry: {address: r.example, username: me, password_env: FAASO_TEST_PW}"
        )
    )
    assert config.registry_login is not None and config.registry_login.password() == "from-env"
    assert load_config(routes(tmp_path, "registry: r.example:5000/x\n")).registry_login is None


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        ("swarm: {cluster: Bad_Name}", "swarm.cluster", "lowercase letters"),
        ("swarm: {autoscaler: yes-please}", "swarm.autoscaler", "true or false"),
        ("swarm: {leader: a}", "swarm.leader", "unknown key"),
        ("registry: {address: r.example, password: hunter2}", "registry.password", "instead"),
        ("registry: {address: r.example, username: me}", "registry", "exactly one of"),
        ("registry: {address: r.example, password_env: X}", "registry.username", "needs"),
        ("registry: {address: r.example, username: me, password_file: nope}", "password_file", ""),
        ("registry: {address: 'not a host'}", "registry.address", "host[:port]"),
    ],
)
def test_bad_swarm_settings(tmp_path: Path, extra: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(routes(tmp_path, extra + "\n"))
    assert key in str(info.value) and fragment in str(info.value)
    assert "hunter2" not in str(info.value)
