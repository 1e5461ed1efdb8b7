"""A cluster of faaso processes on one Swarm: following what the other members deploy.

With ``swarm: {cluster: NAME}`` every member owns the same services (one owner id), and Swarm
holds what is deployed: each service of an API deployment records the deployment in its labels
(``faaso.origin=api``, ``faaso.deployment``, ``faaso.created-at``; never registryAuth). This
loop reads those records and hands them to the desired state, which applies the difference:
a function deployed through another member is listed and served here too, one removed there
goes here (its controller does not bring the service back), one changed there is changed here.

The cluster's secrets are followed the same way (:mod:`faaso.backends.swarm.secrets`): a
look also reads the secret versions, and when the newest version of a secret changed (made,
rotated or removed through another member) the running config is re-applied, so the
functions that use it take the new version (their fingerprint is made of the versions).

When it runs: woken by the engine's events about this owner's services (create, update,
remove) and secrets (``Type: secret``: create, remove), so a change is seen within a moment;
and every ``INTERVAL`` seconds whatever came, because an event stream can miss events (a
reconnect, a member on another manager node whose events this engine does not send). A look
is one service listing and one secret listing, and costs nothing when nothing changed.

Routes-file functions are not synced: each member reconciles the functions of its own routes
file (members should share one), and never removes a service it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from structlog.typing import FilteringBoundLogger

from faaso.backends.base import (
    LABEL_CREATED_AT,
    LABEL_DEPLOYMENT,
    LABEL_ORIGIN,
    Orchestrator,
    ServiceEvent,
)
from faaso.backends.swarm.secrets import SwarmSecrets
from faaso.config.deployment import deployment_to_spec
from faaso.config.desired import DesiredState, Stored
from faaso.errors import FaasoError, InvalidRequest
from faaso.guard import TaskGuard

INTERVAL = 5.0  # seconds between looks when no event came
WAKING = frozenset({"create", "update", "remove", "gone", "secret"})


class ClusterSync:
    def __init__(
        self,
        orchestrator: Orchestrator,
        desired: DesiredState,
        log: FilteringBoundLogger,
        secrets: SwarmSecrets | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._secrets = secrets  # the cluster's secret versions (followed like the records)
        self._desired = desired
        self._log = log
        self._guard = TaskGuard(log)
        self._wake = asyncio.Event()
        self._bad: set[str] = set()  # records already reported as unreadable
        self.syncs = 0  # looks that changed something (for tests and logs)

    async def records(self) -> dict[str, Stored]:
        """The API deployments the cluster's services record. Raises BackendError."""
        out: dict[str, Stored] = {}
        for found in await self._orchestrator.services():
            labels = found.labels
            if labels.get(LABEL_ORIGIN) != "api" or found.function in out:
                continue
            raw = labels.get(LABEL_DEPLOYMENT, "")
            try:
                doc = json.loads(raw)
                spec = deployment_to_spec(doc)
                created = float(labels.get(LABEL_CREATED_AT) or 0.0)
            except (ValueError, InvalidRequest) as exc:
                if raw not in self._bad:
                    self._bad.add(raw)
                    self._log.warning(
                        "cluster.record_unreadable", function=found.function, error=str(exc)
                    )
                continue
            if spec.name != found.function:
                continue
            out[spec.name] = Stored(doc, created)
        return out

    async def seed(self) -> None:
        """At start, before the supervisor: the cluster's API deployments. Raises
        BackendError."""
        if self._secrets is not None:
            await self._secrets.refresh()  # the fingerprints every member computes
        records = await self.records()
        self._desired.seed_shared(records)
        self._log.info("cluster.seeded", functions=sorted(records))

    def start(self) -> None:
        self._guard.spawn("cluster-sync", self._run)

    async def close(self) -> None:
        await self._guard.close()

    def on_event(self, event: ServiceEvent) -> None:
        if event.kind in WAKING:
            self._wake.set()

    async def sync(self) -> bool:
        """One look: apply what changed. Raises BackendError, ReloadError."""
        changed = False
        if self._secrets is not None and await self._secrets.refresh():
            # a secret made, rotated or removed through another member: the functions that
            # use it take the newest version (the service is rolled once, by whichever
            # member gets there first; the others find it at their fingerprint)
            self._log.info("cluster.secrets_changed")
            await self._desired.refresh()
            changed = True
        changed = await self._desired.sync_shared(await self.records()) or changed
        if changed:
            self.syncs += 1
            self._log.info("cluster.synced", functions=sorted(self._desired.deployed))
        return changed

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sync()
            except FaasoError as exc:  # the engine is away, or a change could not start here
                self._log.warning("cluster.sync_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL):  # poll with a deadline (events wake it)
                    await self._wake.wait()
