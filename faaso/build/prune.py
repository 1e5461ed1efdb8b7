"""Removing the images faaso built and no longer needs.

Every build leaves a new tag ``faaso/<function>:<hash>`` and, for runtimes with a build stage,
an untagged build-stage image (200-280 MB for python). ``prune()`` removes, per function:

- tags beyond the ``keep`` newest that no container (running or stopped, anyone's) uses;
- build-stage images beyond the ``keep`` newest: they are the layer cache that spares the next
  build a dependency install, so the newest stay;
- untagged final images faaso built (a tag rebuilt with ``--no-cache`` leaves the old one) that
  no container uses.

Only images faaso made are ever touched: a tag must be ``faaso/<function>:...`` *and* carry
the ``faaso.function`` label the builder sets; a build stage must be dangling and carry the
``faaso.build-stage`` label the runtime templates set. An image that another tag of someone
else's also names keeps that tag (and so stays).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiodocker
from structlog.typing import FilteringBoundLogger

from faaso.errors import BackendError

FUNCTION_LABEL = "faaso.function"
HASH_LABEL = "faaso.build-hash"
STAGE_LABEL = "faaso.build-stage"
DEFAULT_KEEP = 3


@dataclass(slots=True)
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove) and what it could not."""

    tags: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # untagged ones, by id: stages, old finals
    kept: list[str] = field(default_factory=list)  # tags kept: newest or in use
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, list[str]]:
        return {"tags": self.tags, "images": self.images, "kept": self.kept, "errors": self.errors}


async def prune(
    docker: aiodocker.Docker,
    log: FilteringBoundLogger,
    *,
    keep: int = DEFAULT_KEEP,
    functions: Iterable[str] | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Remove what the module docstring says, for ``functions`` (all when None).

    Raises :class:`BackendError` when the engine cannot list images or containers; a single
    image that cannot be removed (in use meanwhile, a child image) is reported in ``errors``.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    only = set(functions) if functions is not None else None
    result = PruneResult()
    try:
        in_use = await _in_use(docker)
        tagged = await docker.images.list(filters={"label": [FUNCTION_LABEL]})
        stages = await docker.images.list(filters={"dangling": ["true"], "label": [STAGE_LABEL]})
        finals = await docker.images.list(filters={"dangling": ["true"], "label": [HASH_LABEL]})
    except aiodocker.DockerError as exc:
        raise BackendError(f"cannot list images or containers: {exc.message}") from exc

    by_function: dict[str, list[tuple[dict[str, Any], list[str]]]] = {}
    for image in tagged:
        function = str((image.get("Labels") or {}).get(FUNCTION_LABEL, ""))
        ours = [t for t in image.get("RepoTags") or [] if t.startswith(f"faaso/{function}:")]
        if function and ours and (only is None or function in only):
            by_function.setdefault(function, []).append((image, ours))
    for function, found in sorted(by_function.items()):
        tags_of = {str(image["Id"]): tags for image, tags in found}
        ordered = await _newest_first(docker, [image for image, _ in found])
        for index, image in enumerate(ordered):
            tags = tags_of[str(image["Id"])]
            if index < keep or str(image["Id"]) in in_use:
                result.kept.extend(tags)
                continue
            for tag in tags:
                if await _remove(docker, tag, dry_run, result):
                    result.tags.append(tag)
                    log.info("prune.tag", function=function, image=tag, dry_run=dry_run)

    stage_groups: dict[str, list[dict[str, Any]]] = {}
    for image in stages:
        group = str((image.get("Labels") or {}).get(STAGE_LABEL, ""))
        if group and (only is None or group in only):
            stage_groups.setdefault(group, []).append(image)
    old = [
        (group, image)
        for group, items in sorted(stage_groups.items())
        for image in (await _newest_first(docker, items))[keep:]
    ]
    old += [
        (str((i.get("Labels") or {}).get(FUNCTION_LABEL, "")), i)
        for i in finals
        if only is None or (i.get("Labels") or {}).get(FUNCTION_LABEL) in only
    ]
    for group, image in old:
        image_id = str(image["Id"])
        if image_id in in_use:
            continue
        if await _remove(docker, image_id, dry_run, result):
            result.images.append(image_id)
            log.info("prune.image", function=group, image=image_id[:19], dry_run=dry_run)
    return result


async def _in_use(docker: aiodocker.Docker) -> set[str]:
    """The image ids of every container on the host, running or stopped, whoever made it."""
    return {str(c["ImageID"]) for c in await docker.containers.list(all=True)}


async def _newest_first(
    docker: aiodocker.Docker, images: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``images`` newest first, to the nanosecond (the listing's ``Created`` is in seconds, and
    builds from cached layers come in the same second)."""
    keys: dict[str, tuple[int, str]] = {}
    for image in images:
        image_id = str(image["Id"])
        try:
            created = str((await docker.images.inspect(image_id)).get("Created") or "")
        except aiodocker.DockerError:
            created = ""
        keys[image_id] = (int(image.get("Created") or 0), _nanos(created))
    return sorted(images, key=lambda i: keys[str(i["Id"])], reverse=True)


def _nanos(created: str) -> str:
    """The fraction of an RFC 3339 time, nine digits wide, so that it sorts as a number."""
    if "." not in created:
        return "0" * 9
    fraction = created.split(".", 1)[1].rstrip("Z").split("+", 1)[0].split("-", 1)[0]
    return fraction.ljust(9, "0")[:9]


async def _remove(docker: aiodocker.Docker, ref: str, dry_run: bool, result: PruneResult) -> bool:
    if dry_run:
        return True
    try:
        await docker.images.delete(ref, force=False, noprune=False)
    except aiodocker.DockerError as exc:
        if exc.status == 404:  # gone meanwhile (another prune, a user)
            return False
        result.errors.append(f"{ref}: {str(exc.message).strip()}")
        return False
    return True
