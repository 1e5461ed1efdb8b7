"""The function store over the management API: list, describe, deploy (a faaso extension).

- ``GET /system/store``: ``{"location": ..., "architecture": ..., "functions": [entry...]}``
- ``GET /system/store/{name}``: one entry
- ``POST /system/store/{name}``: deploy it, body ``{"name": NEW_NAME}`` optional (202)

The store is read on every call from what the routes file names (``store:``), so an edit of
the store file or a reload of the routes file shows at once. An entry with ``images`` is
deployed with the image for this machine's architecture; an entry with a ``source`` folder is
built first (the same builder as the routes file's functions), then deployed with the image
built. Either way it becomes an API deployment, like ``POST /system/functions``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faaso.api.handlers import HOLDER, ApiContext, read_json
from faaso.config.store import Store, StoreEntry, load_store, machine_architecture
from faaso.errors import (
    BuildError,
    ConfigError,
    DependencyError,
    InvalidRequest,
    NotFoundError,
    SourceError,
)
from faaso.spec.function import FUNCTION_NAME_RE, FunctionSpec


async def current_store(ctx: ApiContext) -> Store:
    """The configured store. A broken store is an InvalidRequest naming the file and key."""
    try:
        return await load_store(ctx.desired.file_config.store)
    except ConfigError as exc:
        raise InvalidRequest(f"the function store cannot be read: {exc}") from exc


async def store_entry(ctx: ApiContext, name: str) -> StoreEntry:
    entry = (await current_store(ctx)).get(name)
    if entry is None:
        raise NotFoundError(f"the store has no function {name!r}")
    return entry


async def deploy_entry(ctx: ApiContext, entry: StoreEntry, name: str | None = None) -> str:
    """Deploy a store entry as ``name`` (default: its own). Returns the name deployed."""
    service = name or entry.name
    if not FUNCTION_NAME_RE.match(service):
        raise InvalidRequest(
            f"{service!r} is not a valid function name: lowercase letters, digits and '-'"
        )
    if entry.source is not None:
        if ctx.images is None:
            raise InvalidRequest("this server cannot build images for store entries")
        try:
            image = await ctx.images.ensure(
                FunctionSpec(name=service, source=entry.source, runtime=entry.runtime)
            )
        except (BuildError, SourceError, DependencyError) as exc:
            raise InvalidRequest(f"building store entry {entry.name!r} failed: {exc}") from exc
    else:
        arch = machine_architecture()
        found = entry.image_for(arch)
        if found is None:
            raise InvalidRequest(
                f"store entry {entry.name!r} has no image for {arch} "
                f"(it has: {', '.join(sorted(entry.images)) or 'none'})"
            )
        image = found
    body: dict[str, Any] = {
        "service": service,
        "image": image,
        "envVars": dict(entry.environment),
        "labels": dict(entry.labels),
        "annotations": {**entry.annotations, "faaso.store/entry": entry.name},
        "readOnlyRootFilesystem": entry.read_only_root,
    }
    if entry.fprocess:
        body["envProcess"] = entry.fprocess
    update = service in ctx.desired.deployed
    await ctx.desired.deploy(body, update=update)
    return service


async def list_store(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    store = await current_store(ctx)
    return web.json_response(
        {
            "location": store.location,
            "architecture": machine_architecture(),
            "functions": [e.as_json() for e in store.functions],
        }
    )


async def describe_store_entry(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    entry = await store_entry(ctx, request.match_info["name"])
    return web.json_response(entry.as_json())


async def deploy_store_entry(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    entry = await store_entry(ctx, request.match_info["name"])
    name: str | None = None
    if request.can_read_body:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidRequest('the body must be {"name": NEW_NAME} or empty')
        raw = body.get("name")
        if raw not in (None, "") and not isinstance(raw, str):
            raise InvalidRequest("name must be a string")
        name = raw or None
    deployed = await deploy_entry(ctx, entry, name)
    return web.json_response(
        {"message": f"store function {entry.name!r} deployed as {deployed!r}", "name": deployed},
        status=202,
    )


def add_store_routes(app: web.Application) -> None:
    app.router.add_get("/store", list_store)
    app.router.add_get("/store/{name}", describe_store_entry)
    app.router.add_post("/store/{name}", deploy_store_entry)
