"""Client commands: talk to a running faaso over its HTTP API (``faaso list``, ``deploy``...).

Every command takes ``--gateway`` (default ``$FAASO_GATEWAY`` or http://127.0.0.1:8080) and
credentials for the ``/system`` API: ``--password`` or ``$FAASO_PASSWORD``, else the password
file of the server's state directory (``--state-dir``, default ``.faaso/`` beside ``--config``).
Tables by default, the server's JSON with ``--json``. Errors come from :mod:`faaso.client.http` as
``ClientError`` and reach the user through :func:`faaso.cli.main.main` as ``faaso: <message>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from faaso.errors import AuthError, FaasoError

if TYPE_CHECKING:
    from faaso.client.http import Client

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
DEFAULT_CONFIG = Path("conf/routes.yml")
GATEWAY_ENV = "FAASO_GATEWAY"
PASSWORD_ENV = "FAASO_PASSWORD"

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], int]


# -- arguments ---------------------------------------------------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _header(text: str) -> tuple[str, str]:
    # "Name: value" (curl's way) or "Name=value" (faas-cli's): a header name has neither.
    cut = min((i for i in (text.find(":"), text.find("=")) if i >= 0), default=-1)
    name, value = (text[:cut].strip(), text[cut + 1 :].strip()) if cut >= 0 else ("", "")
    if not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name, value


def _replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    value = _replicas(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("gateway options")
    group.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help=f"the faaso server (default: ${GATEWAY_ENV} or {DEFAULT_GATEWAY})",
    )
    group.add_argument(
        "--password",
        default=None,
        help=f"the admin password of the /system API (default: ${PASSWORD_ENV}, "
        "else the server's password file)",
    )
    group.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="the server's routes file, to find its state directory (default: conf/routes.yml)",
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the server's state directory, holding secrets/basic-auth-password "
        "(default: .faaso/ beside --config)",
    )
    return common


def _namespaced() -> argparse.ArgumentParser:
    """``--namespace``, for the commands that act on functions or secrets."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--namespace",
        "-n",
        metavar="NS",
        default=None,
        help="the OpenFaaS namespace (one the server has: GET /system/namespaces); "
        "default openfaas-fn, where the routes file's functions are",
    )
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the server's JSON")


def register(sub: Any) -> None:
    """Add the client commands to the ``faaso`` command's subparsers."""
    common = [_common()]
    namespaced = [*common, _namespaced()]

    p = sub.add_parser("list", parents=namespaced, help="list the functions of a running faaso")
    _json_flag(p)
    p.set_defaults(handler=_list)

    p = sub.add_parser("describe", parents=namespaced, help="show one function in detail")
    p.add_argument("name")
    _json_flag(p)
    p.set_defaults(handler=_describe)

    p = sub.add_parser(
        "deploy",
        parents=namespaced,
        help="deploy a function from an image (POST; with --update, PUT)",
        description="Deploy a function from an image that serves HTTP on port 8080.",
    )
    p.add_argument("--name", required=True, help="the function's name")
    p.add_argument("--image", required=True, help="the image to run, e.g. faaso/sum:<tag>")
    p.add_argument(
        "--env", metavar="K=V", type=_key_value, action="append", default=[], help="environment"
    )
    p.add_argument(
        "--label", metavar="K=V", type=_key_value, action="append", default=[], help="label"
    )
    p.add_argument(
        "--annotation",
        metavar="K=V",
        type=_key_value,
        action="append",
        default=[],
        help="annotation (com.openfaas.health.http.path=/path sets the health check)",
    )
    p.add_argument(
        "--secret",
        metavar="NAME",
        action="append",
        default=[],
        help="a secret mounted at /var/openfaas/secrets/NAME",
    )
    p.add_argument("--memory", help="memory limit, e.g. 128Mi")
    p.add_argument("--cpu", help="CPU limit, e.g. 0.5 or 500m")
    p.add_argument("--read-only", action="store_true", help="read-only root filesystem")
    p.add_argument(
        "--update",
        action="store_true",
        help="replace a deployed function (PUT; a function not yet deployed is created)",
    )
    p.set_defaults(handler=_deploy)

    p = sub.add_parser("remove", parents=namespaced, help="remove a function deployed with deploy")
    p.add_argument("name")
    p.set_defaults(handler=_remove)

    p = sub.add_parser(
        "scale",
        parents=namespaced,
        help="set a function's number of replicas (an API override), or --reset it",
    )
    p.add_argument("name")
    p.add_argument("replicas", type=_replicas, nargs="?")
    p.add_argument(
        "--reset",
        action="store_true",
        help="drop the API override: the routes file's (or deployment's) replicas apply again",
    )
    p.set_defaults(handler=_scale)

    p = sub.add_parser(
        "invoke",
        parents=namespaced,
        help="call a function through /function/NAME and print its answer",
        description="Call a function and print the body it answers. The request body is "
        "--data, else standard input when it is not a terminal. Exits 1 on a status of 400 "
        "or more.",
    )
    p.add_argument("name")
    p.add_argument("--method", "-X", default=None, help="GET without a body, POST with one")
    p.add_argument("--data", "-d", default=None, help="the request body")
    p.add_argument(
        "--header",
        "-H",
        metavar="K:V",
        type=_header,
        action="append",
        default=[],
        help="a request header (may be repeated)",
    )
    p.add_argument("--path", default="", help="sub-path and query string, e.g. /sub?q=1")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for the answer (no limit)"
    )
    p.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="queue the call (/async-function/NAME) and print its call id",
    )
    p.add_argument("--callback", metavar="URL", default=None, help="X-Callback-Url (--async)")
    p.add_argument("--call-id", default=None, help="X-Call-Id: the same id twice is one job")
    p.set_defaults(handler=_invoke)

    jobs = sub.add_parser("async", help="asynchronous calls: list, show, replay, purge")
    jsub = jobs.add_subparsers(dest="async_command", required=True, metavar="COMMAND")
    p = jsub.add_parser("list", parents=common, help="list asynchronous calls, oldest first")
    p.add_argument("--state", default=None, help="queued, running, succeeded, failed, dead...")
    p.add_argument("--function", default=None)
    p.add_argument("--limit", type=_positive, default=100)
    _json_flag(p)
    p.set_defaults(handler=_async_list)
    p = jsub.add_parser("show", parents=common, help="one call: state, attempts, response")
    p.add_argument("call_id")
    p.set_defaults(handler=_async_show)
    p = jsub.add_parser("cancel", parents=common, help="cancel a call that has not started")
    p.add_argument("call_id")
    p.set_defaults(handler=_async_cancel)
    for action, what in (("replay", "queue dead letters again"), ("purge", "delete dead letters")):
        p = jsub.add_parser(action, parents=common, help=f"{what} (the given ids, or all)")
        p.add_argument("ids", nargs="*", metavar="CALL-ID")
        p.add_argument("--function", default=None, help="only this function's")
        p.set_defaults(handler=_async_dead, action=action)

    p = sub.add_parser(
        "logs", parents=namespaced, help="print a function's logs: timestamp instance text"
    )
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until Ctrl-C")
    p.add_argument("--tail", type=_positive, default=None, help="only the last N lines")
    p.add_argument("--since", metavar="RFC3339", help="only lines after this time")
    p.add_argument("--instance", help="only this container (name or id)")
    p.add_argument("--json", action="store_true", help="print the server's NDJSON entries")
    p.set_defaults(handler=_logs)

    secret = sub.add_parser("secret", help="manage the secrets functions can mount")
    ssub = secret.add_subparsers(dest="secret_command", required=True, metavar="COMMAND")
    for verb, handler, what in (
        ("create", _secret_create, "create a secret"),
        ("update", _secret_update, "change a secret's value (its functions roll over)"),
    ):
        p = ssub.add_parser(
            verb,
            parents=namespaced,
            help=what,
            description=f"{what.capitalize()}. The value is --value, the bytes of --from-file, "
            "or standard input (one trailing newline removed).",
        )
        p.add_argument("name")
        source = p.add_mutually_exclusive_group()
        source.add_argument("--value", help="the value, as text")
        source.add_argument("--from-file", type=Path, metavar="FILE", help="the value, a file")
        p.set_defaults(handler=handler)
    p = ssub.add_parser("list", parents=namespaced, help="list the secrets (never their values)")
    _json_flag(p)
    p.set_defaults(handler=_secret_list)
    p = ssub.add_parser("remove", parents=namespaced, help="remove a secret no function uses")
    p.add_argument("name")
    p.set_defaults(handler=_secret_remove)

    store = sub.add_parser("store", help="the function store: list, describe, deploy")
    stsub = store.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    p = stsub.add_parser("list", parents=common, help="list the functions the store offers")
    _json_flag(p)
    p.set_defaults(handler=_store_list)
    p = stsub.add_parser("describe", parents=common, help="show one store function")
    p.add_argument("name")
    _json_flag(p)
    p.set_defaults(handler=_store_describe)
    p = stsub.add_parser(
        "deploy",
        parents=common,
        help="deploy a store function (built first when the store names its source folder)",
    )
    p.add_argument("name")
    p.add_argument("--name", dest="new_name", help="deploy it under this name instead")
    p.set_defaults(handler=_store_deploy)

    p = sub.add_parser(
        "status",
        parents=common,
        help="is the server healthy: functions ready or not, last reload, version",
        description="Show the server's health. Exits 1 while a function is not ready.",
    )
    _json_flag(p)
    p.set_defaults(handler=_status)


# -- running a client --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    password: str | None
    source: str  # where the password came from, or why there is none


def _credentials(args: argparse.Namespace) -> Credentials:
    from faaso.api.auth import password_path
    from faaso.state.paths import default_state_dir

    if args.password is not None:
        return Credentials(args.password, "the password given with --password")
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return Credentials(env, f"the password in ${PASSWORD_ENV}")
    state_dir = args.state_dir or default_state_dir(args.config)
    path = password_path(state_dir)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return Credentials(None, f"no password was given and {path} does not exist")
    except OSError as exc:
        return Credentials(None, f"no password was given and {path} cannot be read: {exc}")
    if not password:
        return Credentials(None, f"no password was given and {path} is empty")
    return Credentials(password, f"the password in {path}")


def _gateway(args: argparse.Namespace) -> str:
    return str(args.gateway or os.environ.get(GATEWAY_ENV) or DEFAULT_GATEWAY)


def _with_client(args: argparse.Namespace, use: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``use`` with a client for the gateway; a 401 becomes an error saying what to do."""
    from faaso.cli.run import run
    from faaso.client.http import Client
    from faaso.errors import ClientError

    credentials = _credentials(args)
    client = Client(_gateway(args), credentials.password)

    async def main() -> T:
        async with client:
            return await use(client)

    try:
        return run(main)
    except ClientError as exc:
        if exc.status != 401:
            raise
        if credentials.password is None:
            what = credentials.source
        else:
            what = f"the gateway refused {credentials.source}"
        raise AuthError(
            f"{exc}: {what}; give the server's admin password with --password or "
            f"${PASSWORD_ENV}, or its state directory with --state-dir "
            "(the password is in <state-dir>/secrets/basic-auth-password)"
        ) from exc


def _function_url(args: argparse.Namespace, name: str, namespace: object) -> str:
    """The function's OpenFaaS URL: ``/function/NAME``, ``NAME.NS`` outside the default."""
    suffix = f".{namespace}" if namespace and namespace != "openfaas-fn" else ""
    return f"{_gateway(args).rstrip('/')}/function/{name}{suffix}"


def _quiet_broken_pipe(handler: Handler) -> Handler:
    """``faaso logs x | head`` ends quietly when the reader goes away."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_FAILURE

    return wrapped


# -- output ------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _print_json(doc: object) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False))


def _count(status: dict[str, Any], key: str) -> int:
    value = status.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _state(status: dict[str, Any]) -> str:
    replicas, available = _count(status, "replicas"), _count(status, "availableReplicas")
    if replicas == 0:
        return "scaled to zero"
    if available >= replicas:
        return "ready"
    return f"not ready ({available} of {replicas} available)"


def _pairs(value: object) -> str:
    if isinstance(value, dict) and value:
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, list) and value:
        return ", ".join(str(v) for v in value)
    return "-"


def _when(timestamp: object) -> str:
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")
    return str(timestamp)


# -- the commands ------------------------------------------------------------------------------


@_quiet_broken_pipe
def _list(args: argparse.Namespace) -> int:
    functions = _with_client(args, lambda c: c.list_functions(args.namespace))
    if args.json:
        _print_json(functions)
        return EXIT_OK
    rows = [
        (
            f.get("name", ""),
            f.get("image", ""),
            _count(f, "replicas"),
            _count(f, "availableReplicas"),
            _count(f, "invocationCount"),
        )
        for f in sorted(functions, key=lambda f: str(f.get("name", "")))
    ]
    print(_table(("NAME", "IMAGE", "REPLICAS", "AVAILABLE", "INVOCATIONS"), rows))
    return EXIT_OK


@_quiet_broken_pipe
def _describe(args: argparse.Namespace) -> int:
    status = _with_client(args, lambda c: c.describe(args.name, args.namespace))
    if args.json:
        _print_json(status)
        return EXIT_OK
    name = str(status.get("name", args.name))
    limits, requests = status.get("limits") or {}, status.get("requests") or {}
    fields = [
        ("Name", name),
        ("Status", _state(status)),
        ("Replicas", _count(status, "replicas")),
        ("Available replicas", _count(status, "availableReplicas")),
        ("Invocations", _count(status, "invocationCount")),
        ("Image", status.get("image") or "-"),
        ("Function URL", _function_url(args, name, status.get("namespace"))),
        ("Namespace", status.get("namespace") or "-"),
        ("Created", status.get("createdAt") or "-"),
        ("Env vars", _pairs(status.get("envVars"))),
        ("Secrets", _pairs(status.get("secrets"))),
        ("Labels", _pairs(status.get("labels"))),
        ("Annotations", _pairs(status.get("annotations"))),
        ("Limits", _pairs(limits)),
        ("Requests", _pairs(requests)),
        ("Read-only root", "yes" if status.get("readOnlyRootFilesystem") else "no"),
    ]
    if status.get("envProcess"):
        fields.append(("Process", status["envProcess"]))
    width = max(len(k) for k, _ in fields) + 2
    for key, value in fields:
        print(f"{key + ':':<{width}}{value}")
    return EXIT_OK


@_quiet_broken_pipe
def _deploy(args: argparse.Namespace) -> int:
    deployment: dict[str, Any] = {"service": args.name, "image": args.image}
    if args.env:
        deployment["envVars"] = dict(args.env)
    if args.label:
        deployment["labels"] = dict(args.label)
    if args.annotation:
        deployment["annotations"] = dict(args.annotation)
    if args.secret:
        deployment["secrets"] = list(dict.fromkeys(args.secret))
    limits = {k: v for k, v in (("memory", args.memory), ("cpu", args.cpu)) if v}
    if limits:
        deployment["limits"] = limits
    if args.read_only:
        deployment["readOnlyRootFilesystem"] = True
    if args.namespace:
        deployment["namespace"] = args.namespace
    message = _with_client(args, lambda c: c.deploy(deployment, update=args.update))
    print(message)
    print(f"URL: {_function_url(args, args.name, args.namespace)}")
    return EXIT_OK


@_quiet_broken_pipe
def _store_list(args: argparse.Namespace) -> int:
    store = _with_client(args, lambda c: c.store_list())
    if args.json:
        _print_json(store)
        return EXIT_OK
    arch = str(store.get("architecture", ""))
    rows = [
        (
            f.get("name", ""),
            f.get("title", ""),
            (f.get("images") or {}).get(arch)
            or (f"build {f['source']}" if f.get("source") else "-"),
            f.get("description", ""),
        )
        for f in store["functions"]
        if isinstance(f, dict)
    ]
    print(_table(("NAME", "TITLE", "IMAGE", "DESCRIPTION"), rows))
    return EXIT_OK


@_quiet_broken_pipe
def _store_describe(args: argparse.Namespace) -> int:
    entry = _with_client(args, lambda c: c.store_describe(args.name))
    if args.json:
        _print_json(entry)
        return EXIT_OK
    fields = [
        ("Name", entry.get("name", args.name)),
        ("Title", entry.get("title") or "-"),
        ("Description", entry.get("description") or "-"),
        ("Images", _pairs(entry.get("images"))),
        ("Source", entry.get("source") or "-"),
        ("Runtime", entry.get("runtime") or "-"),
        ("Process", entry.get("fprocess") or "-"),
        ("Environment", _pairs(entry.get("environment"))),
        ("Labels", _pairs(entry.get("labels"))),
        ("Annotations", _pairs(entry.get("annotations"))),
        ("Read-only root", "yes" if entry.get("readOnlyRootFilesystem") else "no"),
    ]
    width = max(len(k) for k, _ in fields) + 2
    for key, value in fields:
        print(f"{key + ':':<{width}}{value}")
    return EXIT_OK


@_quiet_broken_pipe
def _store_deploy(args: argparse.Namespace) -> int:
    print(_with_client(args, lambda c: c.store_deploy(args.name, args.new_name)))
    name = args.new_name or args.name
    print(f"URL: {_gateway(args).rstrip('/')}/function/{name}")
    return EXIT_OK


@_quiet_broken_pipe
def _remove(args: argparse.Namespace) -> int:
    print(_with_client(args, lambda c: c.remove(args.name, args.namespace)))
    return EXIT_OK


@_quiet_broken_pipe
def _scale(args: argparse.Namespace) -> int:
    if args.reset == (args.replicas is not None):
        print("faaso scale: give either REPLICAS or --reset", file=sys.stderr)
        return EXIT_USAGE
    if args.reset:
        print(_with_client(args, lambda c: c.reset_scale(args.name, args.namespace)))
    else:
        print(_with_client(args, lambda c: c.scale(args.name, args.replicas, args.namespace)))
    return EXIT_OK


@_quiet_broken_pipe
def _invoke(args: argparse.Namespace) -> int:
    from faaso.client.http import error_message
    from faaso.errors import ClientError

    body: bytes | None = None
    if args.data is not None:
        body = args.data.encode()
    elif not sys.stdin.isatty():
        body = sys.stdin.buffer.read() or None
    method = args.method or ("POST" if body is not None else "GET")
    headers = list(args.header)
    if args.callback:
        headers.append(("X-Callback-Url", args.callback))
    if args.call_id:
        headers.append(("X-Call-Id", args.call_id))
    answer = _with_client(
        args,
        lambda c: c.invoke(
            args.name,
            method=method,
            body=body,
            headers=headers,
            path=args.path,
            timeout=args.timeout,
            asynchronous=args.asynchronous,
            namespace=args.namespace,
        ),
    )
    if args.asynchronous and answer.status == 202:
        print(answer.headers.get("X-Call-Id", ""))
        return EXIT_OK
    if answer.status >= 400 and answer.internal:
        # the gateway's own error (no such function, none ready...): a message, not a body
        raise ClientError(error_message(answer.body, None), answer.status)
    sys.stdout.buffer.write(answer.body)
    sys.stdout.flush()
    if answer.status >= 400:
        print(f"faaso: function {args.name!r} answered HTTP {answer.status}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _async_list(args: argparse.Namespace) -> int:
    jobs = _with_client(
        args,
        lambda c: c.async_jobs(state=args.state, function=args.function, limit=args.limit),
    )
    if args.json:
        _print_json(jobs)
        return EXIT_OK
    rows = [
        [j.get("callId"), j.get("function"), j.get("state"), j.get("attempts"),
         j.get("status") or "-", _when(j.get("createdAt"))]
        for j in jobs
    ]  # fmt: skip
    print(_table(["CALL ID", "FUNCTION", "STATE", "ATTEMPTS", "STATUS", "CREATED"], rows))
    return EXIT_OK


def _async_show(args: argparse.Namespace) -> int:
    _print_json(_with_client(args, lambda c: c.async_job(args.call_id)))
    return EXIT_OK


def _async_cancel(args: argparse.Namespace) -> int:
    _with_client(args, lambda c: c.async_cancel(args.call_id))
    print(f"cancelled {args.call_id}")
    return EXIT_OK


def _async_dead(args: argparse.Namespace) -> int:
    done = _with_client(
        args, lambda c: c.async_dead(args.action, ids=args.ids, function=args.function)
    )
    verb = "replayed" if args.action == "replay" else "purged"
    print(f"{verb} {len(done)} dead letter(s)" + (": " + " ".join(done) if done else ""))
    return EXIT_OK


def _log_line(entry: dict[str, Any]) -> str:
    text = str(entry.get("text", "")).rstrip("\n")
    return f"{entry.get('timestamp', '')} {entry.get('instance', '')} {text}\n"


@_quiet_broken_pipe
def _logs(args: argparse.Namespace) -> int:
    out = sys.stdout

    async def show(client: Client) -> None:
        entries = client.logs(
            args.name,
            tail=args.tail,
            since=args.since,
            follow=args.follow,
            instance=args.instance,
            namespace=args.namespace,
        )
        async for entry in entries:
            out.write(json.dumps(entry) + "\n" if args.json else _log_line(entry))
            if args.follow:
                out.flush()

    try:
        _with_client(args, show)
    except KeyboardInterrupt:
        if not args.follow:
            raise
    out.flush()
    return EXIT_OK


def _secret_value(args: argparse.Namespace) -> bytes | None:
    if args.value is not None:
        return str(args.value).encode()
    if args.from_file is not None:
        try:
            return Path(args.from_file).read_bytes()
        except OSError as exc:
            raise FaasoError(f"cannot read {args.from_file}: {exc.strerror or exc}") from exc
    if sys.stdin.isatty():
        return None
    value = sys.stdin.buffer.read()
    return value.removesuffix(b"\n").removesuffix(b"\r")


def _secret_change(args: argparse.Namespace, update: bool) -> int:
    value = _secret_value(args)
    if value is None:
        print(
            "faaso: give the secret's value with --value, --from-file or on standard input",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not value:
        print(f"faaso: the value of secret {args.name!r} is empty", file=sys.stderr)
        return EXIT_USAGE
    if update:
        message = _with_client(args, lambda c: c.update_secret(args.name, value, args.namespace))
    else:
        message = _with_client(args, lambda c: c.create_secret(args.name, value, args.namespace))
    print(message)
    return EXIT_OK


@_quiet_broken_pipe
def _secret_create(args: argparse.Namespace) -> int:
    return _secret_change(args, update=False)


@_quiet_broken_pipe
def _secret_update(args: argparse.Namespace) -> int:
    return _secret_change(args, update=True)


@_quiet_broken_pipe
def _secret_list(args: argparse.Namespace) -> int:
    secrets = _with_client(args, lambda c: c.list_secrets(args.namespace))
    if args.json:
        _print_json(secrets)
        return EXIT_OK
    rows = [(s.get("name", ""),) for s in sorted(secrets, key=lambda s: str(s.get("name", "")))]
    print(_table(("NAME",), rows))
    return EXIT_OK


@_quiet_broken_pipe
def _secret_remove(args: argparse.Namespace) -> int:
    print(_with_client(args, lambda c: c.remove_secret(args.name, args.namespace)))
    return EXIT_OK


@_quiet_broken_pipe
def _status(args: argparse.Namespace) -> int:
    from faaso.errors import ClientError

    async def fetch(client: Client) -> dict[str, Any]:
        health = await client.health()
        info = await client.info()
        try:
            functions: list[dict[str, Any]] | None = await client.list_functions()
        except ClientError as exc:
            if exc.status != 503:  # 503: the server is still starting
                raise
            functions = None
        return {"gateway": client.gateway, "health": health, "info": info, "functions": functions}

    report = _with_client(args, fetch)
    health = report["health"]
    ok = health.get("status") == "ok"
    if args.json:
        _print_json(report)
    else:
        print(_status_text(report))
    if not ok:
        print("faaso: not every function is ready", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _status_text(report: dict[str, Any]) -> str:
    health, info = report["health"], report["info"]
    provider = info.get("provider") if isinstance(info.get("provider"), dict) else {}
    version = info.get("version") if isinstance(info.get("version"), dict) else {}
    server = " ".join(
        str(x)
        for x in (
            provider.get("provider") or "?",
            version.get("release") or "",
            f"({provider.get('orchestration')}, {info.get('arch')})"
            if provider.get("orchestration")
            else "",
        )
        if x
    )
    reload = health.get("reload") if isinstance(health.get("reload"), dict) else None
    if not reload or reload.get("at") is None:
        reload_text = "none since start"
    elif reload.get("ok"):
        reload_text = f"ok at {_when(reload.get('at'))}"
    else:
        reload_text = f"failed at {_when(reload.get('at'))}: {reload.get('error')}"
    lines = [
        f"gateway:  {report['gateway']}",
        f"status:   {health.get('status', '?')}",
        f"server:   {server}",
        f"reload:   {reload_text}",
    ]
    not_ready = {
        str(s.get("function")): s for s in health.get("not_ready") or [] if isinstance(s, dict)
    }
    functions = report.get("functions")
    rows: list[tuple[object, ...]] = []
    names = {str(f.get("name")): f for f in functions or []}
    for name in sorted(set(names) | set(not_ready)):
        listed, problem = names.get(name), not_ready.get(name)
        source = listed if listed is not None else problem or {}
        replicas = _count(source, "replicas")
        available = _count(source, "availableReplicas" if listed is not None else "available")
        if problem is None:
            rows.append((name, "ready", replicas, available, ""))
        else:
            phase = problem.get("phase") or "not ready"
            rows.append((name, phase, replicas, available, problem.get("error") or ""))
    lines.append("")
    if rows:
        lines.append(_table(("FUNCTION", "STATE", "REPLICAS", "AVAILABLE", "ERROR"), rows))
    else:
        lines.append("no functions")
    return "\n".join(lines)
