"""Pushing with the routes file's registry login, to a real registry that requires one
(Debian's docker-registry with htpasswd auth on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import pytest

from faaso.build.registry import RegistryImages
from faaso.config.swarm import RegistryLogin
from faaso.errors import BackendError, ConfigError
from faaso.logs import get_logger
from faaso.spec.function import FunctionSpec
from tests.helpers import auth_registry, tiny_image

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

USER, PASSWORD = "faaso", "s3cret-for-the-test"


class NoBuilds:
    """The builder's place in RegistryImages; these tests push an image they made."""

    async def ensure(self, spec: FunctionSpec) -> str:
        raise AssertionError("nothing is built here")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with auth_registry(tmp_path / "registry", USER, PASSWORD) as address:
        yield address


@pytest.fixture
def image(tmp_path: Path) -> Iterator[str]:
    tag = tiny_image(tmp_path / "image", f"faaso-test/auth-{secrets.token_hex(4)}:1")
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    yield client
    await client.close()


def tags(address: str, repo: str) -> list[str]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://{address}/v2/{repo}/tags/list", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return list(json.load(resp)["tags"])


async def test_push_needs_the_login_and_uses_it(
    registry: str, image: str, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    target = f"{registry}/{image}"
    try:
        anonymous = RegistryImages(NoBuilds(), docker, registry, get_logger("test"))
        with pytest.raises(BackendError, match="cannot push"):
            await anonymous.push(image, target)

        password_file = tmp_path / "registry-password"
        password_file.write_text(PASSWORD + "\n")
        login = RegistryLogin(tmp_path / "routes.yml", USER, password_file=password_file)
        images = RegistryImages(NoBuilds(), docker, registry, get_logger("test"), login=login)
        await images.push(image, target)
        repo, _, version = image.partition(":")
        assert version in tags(registry, repo)

        # the services of an image in that registry get the same credentials; others none
        spec = FunctionSpec(name="f", image=target)
        assert (
            base64.b64decode(images.pull_auth(spec, target) or "") == f"{USER}:{PASSWORD}".encode()
        )
        assert images.pull_auth(spec, "elsewhere.example/x:1") is None
    finally:
        subprocess.run(["docker", "rmi", "-f", target], capture_output=True, check=False)


def test_a_login_without_a_readable_password_is_a_config_error(tmp_path: Path) -> None:
    login = RegistryLogin(tmp_path / "routes.yml", USER, password_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"registry\.password_file"):
        login.password()
    unset = RegistryLogin(tmp_path / "routes.yml", USER, password_env="FAASO_TEST_UNSET_PW")
    with pytest.raises(ConfigError, match="empty or unset"):
        unset.password()
