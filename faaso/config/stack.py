"""An OpenFaaS stack file (``stack.yml``'s ``functions:`` section) as FunctionDeployment bodies.

What the UI's "paste a stack file" deploys. Each function must name an ``image`` (faaso builds
from its own runtimes, not from faas-cli templates, so ``lang``/``handler`` are only allowed
alongside an image and are otherwise ignored). Fields carried over: ``image``, ``environment``,
``labels``, ``annotations``, ``secrets``, ``limits``, ``requests``, ``readonly_root_filesystem``,
``fprocess`` (also as ``environment.fprocess``), ``constraints``, ``namespace``. The bodies are
validated by :func:`faaso.config.deployment.deployment_to_spec` when deployed.
"""

from __future__ import annotations

from typing import Any

import yaml

from faaso.config.yamlutil import load_strict
from faaso.errors import InvalidRequest

IGNORED = frozenset(
    {"lang", "handler", "build_args", "build_options", "skip_build", "platforms", "build_secrets"}
)
CARRIED = {
    "image": "image",
    "environment": "envVars",
    "labels": "labels",
    "annotations": "annotations",
    "secrets": "secrets",
    "limits": "limits",
    "requests": "requests",
    "readonly_root_filesystem": "readOnlyRootFilesystem",
    "fprocess": "envProcess",
    "constraints": "constraints",
    "namespace": "namespace",
}


def stack_to_deployments(text: str) -> list[dict[str, Any]]:
    """Parse a stack file's text. Raises :class:`InvalidRequest` naming the function and key."""
    try:
        doc = load_strict(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidRequest(f"the stack file is not valid YAML{where}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("functions"), dict):
        raise InvalidRequest("a stack file has a 'functions:' mapping of name to function")
    if not doc["functions"]:
        raise InvalidRequest("the stack file's 'functions:' is empty")
    out: list[dict[str, Any]] = []
    for name, fn in doc["functions"].items():
        if not isinstance(fn, dict):
            raise InvalidRequest(f"functions.{name} must be a mapping")
        body: dict[str, Any] = {"service": str(name)}
        for key, value in fn.items():
            if key in IGNORED:
                continue
            if key == "environment_file":
                raise InvalidRequest(
                    f"functions.{name}.environment_file: paste the variables under environment"
                )
            if key not in CARRIED:
                raise InvalidRequest(f"functions.{name}.{key}: not a stack file function field")
            body[CARRIED[key]] = value
        env = body.get("envVars")
        if isinstance(env, dict) and "fprocess" in env and "envProcess" not in body:
            body["envProcess"] = str(env["fprocess"])
        if "image" not in body:
            raise InvalidRequest(
                f"functions.{name}: give an image (faaso deploys stack functions by image)"
            )
        out.append(body)
    return out
