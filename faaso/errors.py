"""Every exception faaso raises on purpose, in one hierarchy.

Library code raises these; only the command line turns them into messages and exit codes, and
only the API layer turns them into HTTP statuses (:mod:`faaso.api.handlers.handlers`). None of them
carries an HTTP status of its own.

::

    FaasoError
    ├── ConfigError         a configuration file is invalid (file, key, value, problem)
    ├── InvalidRequest      input through the API or CLI cannot be used (400 at the API)
    ├── NotFoundError       a named function, secret or job does not exist (404)
    ├── ConflictError       the change clashes with what exists or with the routes file (409)
    ├── SourceError         a function's own file is wrong (file, line)
    ├── BuildError          an image could not be built (log tail)
    ├── DependencyError     pip or npm could not fetch what a function asks for
    │   ├── WheelError
    │   └── NpmError
    ├── BackendError        the container engine refused or failed an operation
    │   └── UnrunnableError the instance cannot start as specified; retrying will not help
    ├── BootstrapError      the base image could not be pulled nor built
    ├── ReloadError         a new desired state could not be applied; the old one runs on
    ├── StateLockedError    another faaso holds the state directory
    ├── StateDirError       the state directory cannot be created or written
    ├── ListenError         the listening socket cannot be bound (port taken, no permission)
    ├── DevError            a local development command could not do what was asked
    └── ClientError         a request to a faaso server failed (status of its answer, if any)
        └── AuthError       the server refused the credentials
"""

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


class InvalidRequest(FaasoError, ValueError):
    """Input that cannot be used; the message says which field and why."""


class NotFoundError(FaasoError):
    """A named function, secret or job does not exist."""


class ConflictError(FaasoError):
    """The change clashes with what exists (a secret in use, a function of the routes file)."""


class SourceError(FaasoError):
    """A function's own file is wrong (missing, a syntax error...): names the file and line."""

    def __init__(self, path: Path, problem: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {problem}")


class BuildError(FaasoError):
    """An image could not be built. Carries the tail of the build log."""

    def __init__(self, function: str, message: str, log_tail: list[str] | None = None) -> None:
        self.function = function
        self.log_tail = list(log_tail or [])
        text = f"build of function {function!r} failed: {message}"
        if self.log_tail:
            text += "\n" + "\n".join("  | " + line for line in self.log_tail)
        super().__init__(text)


class DependencyError(FaasoError):
    """A function's dependencies could not be fetched on the host."""


class WheelError(DependencyError):
    """pip could not fetch the wheels a requirements file asks for."""


class NpmError(DependencyError):
    """npm could not fetch what a package.json asks for."""


class BackendError(FaasoError):
    """The container engine refused or failed an operation."""


class UnrunnableError(BackendError):
    """An instance cannot be started as specified (the engine refused its settings, a secret it
    needs does not exist): starting it again with the same spec fails the same way."""


class BootstrapError(FaasoError):
    """The base image could not be pulled nor built locally."""


class ReloadError(FaasoError):
    """A new config could not be applied; the old one keeps running."""


class StateLockedError(FaasoError):
    """Another faaso process holds the state directory."""


class StateDirError(FaasoError):
    """The state directory cannot be created or written; the message names it and why."""


class ListenError(FaasoError):
    """The server cannot listen where it was asked to (the port is taken, no permission)."""


class DevError(FaasoError):
    """A local development command could not do what was asked; the message says why."""


class ClientError(FaasoError):
    """A request failed. ``status`` is the HTTP status (None when there was no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.message = message
        self.status = status
        super().__init__(f"{message} (HTTP {status})" if status is not None else message)


class AuthError(ClientError):
    """The gateway refused our credentials; the message says where they came from."""
