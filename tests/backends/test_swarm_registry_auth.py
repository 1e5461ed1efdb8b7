"""registryAuth reaches the Swarm service: against a real registry that requires a login.

``docker service inspect`` never shows a service's credentials, so what is checked is what
they do: with them faaso resolves the image through the registry and pins its digest in the
service (as ``docker service create --with-registry-auth`` does); with a wrong password the
deploy is refused before any service exists; without credentials nothing is asked of the
registry and the image stays as written.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import pytest

from faaso.backends.base import ServiceSpec
from faaso.backends.swarm.orchestrator import SwarmOrchestrator, registry_auth_headers
from faaso.build.registry import RegistryImages
from faaso.config.swarm import RegistryLogin
from faaso.errors import BackendError
from faaso.logs import get_logger
from faaso.spec.function import FunctionSpec
from tests.helpers import auth_registry, remove_swarm_services, swarm_services, tiny_image

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_swarm")]

USER, PASSWORD = "faaso", "s3cret-for-the-test"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_header_is_the_engines_json_for_the_images_registry() -> None:
    headers = registry_auth_headers("127.0.0.1:5999/faaso/x:1", b64("me:pw:with:colons"))
    doc = json.loads(base64.urlsafe_b64decode(headers["X-Registry-Auth"]))
    assert (doc["username"], doc["password"], doc["serveraddress"]) == (
        "me",
        "pw:with:colons",
        "127.0.0.1:5999",
    )
    assert registry_auth_headers("127.0.0.1:5999/faaso/x:1", None) == {}


class NoBuilds:
    async def ensure(self, spec: FunctionSpec) -> str:
        raise AssertionError("nothing is built here")


@pytest.fixture
def pushed(tmp_path: Path) -> Iterator[str]:
    """An image in a registry that requires a login (pushed with it)."""
    tag = tiny_image(tmp_path / "image", f"faaso-test/svc-auth-{secrets.token_hex(4)}:1")
    with auth_registry(tmp_path / "registry", USER, PASSWORD) as address:
        target = f"{address}/{tag}"
        password_file = tmp_path / "pw"
        password_file.write_text(PASSWORD)
        login = RegistryLogin(tmp_path / "routes.yml", USER, password_file=password_file)

        async def push() -> None:
            async with aiodocker.Docker() as docker:
                images = RegistryImages(NoBuilds(), docker, address, get_logger("t"), login=login)
                await images.push(tag, target)

        asyncio.run(push())
        try:
            yield target
        finally:
            subprocess.run(["docker", "rmi", "-f", tag, target], capture_output=True, check=False)


@pytest.fixture
async def orchestrator() -> AsyncIterator[SwarmOrchestrator]:
    owner = "test" + secrets.token_hex(4)
    swarm = SwarmOrchestrator(aiodocker.Docker(), owner)
    await swarm.check()
    yield swarm
    remove_swarm_services(owner)
    await swarm.close()


def spec(function: str, image: str, auth: str | None) -> ServiceSpec:
    # no replicas: what is checked is the service's spec, not its tasks
    return ServiceSpec(function, image, "fp", 0, registry_auth=auth)


async def test_registry_auth_reaches_the_service(
    pushed: str, orchestrator: SwarmOrchestrator
) -> None:
    await orchestrator.deploy(spec("authed", pushed, b64(f"{USER}:{PASSWORD}")))
    image = swarm_services(orchestrator.owner)["authed"]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert image["Image"].startswith(pushed + "@sha256:")  # resolved with the credentials

    with pytest.raises(BackendError, match="did not give"):
        await orchestrator.deploy(spec("wrong", pushed, b64(f"{USER}:not-the-password")))
    assert "wrong" not in swarm_services(orchestrator.owner)

    await orchestrator.deploy(spec("anonymous", pushed, None))
    image = swarm_services(orchestrator.owner)["anonymous"]["Spec"]["TaskTemplate"]
    assert image["ContainerSpec"]["Image"] == pushed  # nothing asked of the registry
