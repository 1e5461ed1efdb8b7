"""Hot reload: watch the routes file and the function folders; apply changes as a diff.

Changes are debounced (an editor's save is several file events). A reload that fails (a YAML
error, an unknown key, a missing folder, a failing build, instances that never get healthy)
leaves the running configuration as it was; the error is logged, naming the file, key and value
where the config is at fault, and kept in ``last`` for /healthz. Saving a fixed file applies it.
``trigger()`` (SIGHUP) reloads without a file change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import watchfiles
from structlog.typing import FilteringBoundLogger

from faaso.config.routes_file import Config, load_config
from faaso.errors import FaasoError
from faaso.guard import TaskGuard
from faaso.spec.timefmt import rfc3339

DEBOUNCE_MS = 300


class Reloader:
    def __init__(
        self,
        config: Config,
        apply: Callable[[Config], Awaitable[object]],
        log: FilteringBoundLogger,
        *,
        extra_runtime_dirs: tuple[Path, ...] = (),
        watch: bool = True,
    ) -> None:
        self._config = config
        self._apply = apply
        self._log = log
        self._extra_runtime_dirs = extra_runtime_dirs
        self._watch = watch
        self._trigger = asyncio.Event()
        self._guard = TaskGuard(log)
        self._watched_before = False
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last: dict[str, object] = {"ok": True, "error": None, "at": None}
        self._failed: Config | None = None  # the file as the last failed reload read it

    def trigger(self) -> None:
        self._trigger.set()

    def retry_for_secret(self, name: str, namespace: str) -> None:
        """A secret was created: when the last reload failed and the file it read has a
        function that uses that secret, reload again now (the reload most likely failed
        because the secret was missing, and the function it adds or changes starts now,
        not on the next save or SIGHUP)."""
        failed = self._failed
        if failed is None:
            return
        if any(
            name in spec.secrets and spec.namespace == namespace
            for spec in failed.functions.values()
        ):
            self._log.info("reload.retry", why=f"secret {name!r} was created")
            self._trigger.set()

    def start(self) -> None:
        """The reload loop and the file watcher, each under a guard: a crash is logged, shown
        under ``reload`` on /healthz, and the loop restarted."""
        self._guard.spawn("reload", self._reload_loop, on_crash=self._crashed)
        if self._watch:
            self._guard.spawn("reload-watch", self._watch_loop)

    async def close(self) -> None:
        await self._guard.close()

    def _crashed(self, exc: BaseException) -> None:
        self.reloads_failed += 1
        error = f"internal error: {type(exc).__name__}: {exc}"
        self.last = {"ok": False, "error": error, "at": rfc3339(time.time())}

    def _passes(self, change: watchfiles.Change, raw: str) -> bool:
        return self._relevant({(change, raw)})

    def _relevant(self, changed: set[tuple[watchfiles.Change, str]]) -> bool:
        config = self._config
        sources = [s.source for s in config.functions.values() if s.source is not None]
        for _change, raw in changed:
            path = Path(raw)
            if path == config.path:
                return True
            if any(path.is_relative_to(src) for src in sources):
                if "__pycache__" in path.parts or path.suffix in (".pyc", ".swp"):
                    continue
                return True
        return False

    @staticmethod
    def _folders(config: Config) -> frozenset[Path]:
        """The config's folder, plus each function folder that lies outside it."""
        folders = {config.path.parent}
        for spec in config.functions.values():
            if spec.source is not None and not spec.source.is_relative_to(config.path.parent):
                folders.add(spec.source)
        return frozenset(folders)

    async def _watch_loop(self) -> None:
        """Watch the config's folders; a failing watcher ends in the guard, which restarts it."""
        while True:
            folders = self._folders(self._config)
            stop = asyncio.Event()
            self._log.debug("reload.watching", folders=sorted(map(str, folders)))
            if self._watched_before:
                # A change made while the watcher was being replaced (or restarted after a
                # crash) would go unseen: look once.
                self._trigger.set()
            self._watched_before = True
            async for changed in watchfiles.awatch(
                *folders,
                # Only the routes file and the function folders' files are passed on: the state
                # directory (sockets, the job queue's database) and logs beside the routes file
                # change all the time and would wake the watcher for nothing.
                watch_filter=self._passes,
                debounce=DEBOUNCE_MS,
                step=50,
                stop_event=stop,
                recursive=True,
                ignore_permission_denied=True,
            ):
                if self._relevant(changed):
                    files = sorted({p for _, p in changed})[:10]
                    self._log.info("reload.change", files=files)
                    self._trigger.set()
                if self._folders(self._config) != folders:  # a source moved: watch anew
                    stop.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._trigger.wait()
            self._trigger.clear()
            await self._reload_once()

    async def _reload_once(self) -> None:
        started = time.monotonic()
        new: Config | None = None
        try:
            new = await asyncio.to_thread(load_config, self._config.path, self._extra_runtime_dirs)
            result = await self._apply(new)
        except FaasoError as exc:
            self._failed = new
            self.reloads_failed += 1
            self.last = {"ok": False, "error": str(exc), "at": rfc3339(time.time())}
            self._log.error("reload.failed", error=str(exc), keeping="the running configuration")
            return
        if new.server != self._config.server:
            self._log.warning(
                "reload.server_unchanged",
                note="the server: block (HTTPS, access log, metrics auth) applies at start; "
                "restart faaso for the change",
            )
        self._config = new
        self._failed = None
        self.reloads_ok += 1
        self.last = {"ok": True, "error": None, "at": rfc3339(time.time())}
        self._log.info(
            "reload.applied", seconds=round(time.monotonic() - started, 3), result=result
        )
