"""Exceptions raised by faaso's library code. Only the CLI turns them into exit codes."""

from __future__ import annotations

from pathlib import Path


class FaasoError(Exception):
    """Base class of every error faaso raises on purpose."""


class ConfigError(FaasoError):
    """A configuration file is invalid. Names the file, the key and the offending value."""

    def __init__(self, path: Path | str, key: str, value: object, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.value = value
        self.problem = problem
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"{where}: {problem} (got {value!r})")


class BuildError(FaasoError):
    """An image could not be built. Carries the tail of the build log."""

    def __init__(self, function: str, message: str, log_tail: list[str] | None = None) -> None:
        self.function = function
        self.log_tail = list(log_tail or [])
        text = f"build of function {function!r} failed: {message}"
        if self.log_tail:
            text += "\n" + "\n".join("  | " + line for line in self.log_tail)
        super().__init__(text)


class BackendError(FaasoError):
    """The container engine refused or failed an operation."""


class BootstrapError(FaasoError):
    """The base image could not be pulled nor built locally."""
