"""Command line: ``python -m faaso <command>``. The only place that prints errors and exits."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from faaso import __version__
from faaso.cli import options
from faaso.errors import ConfigError, FaasoError

if TYPE_CHECKING:  # only for annotations: the CLI imports its layers lazily
    from faaso.spec.cors import CorsPolicy

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Modules with a ``register(subparsers)`` function that adds their commands; each command sets
# ``handler`` (a function of the parsed arguments returning the exit code) with set_defaults.
COMMAND_MODULES: tuple[str, ...] = ("faaso.cli.remote", "faaso.cli.dev")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, not {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faaso", description="Self-hosted Functions-as-a-Service."
    )
    parser.add_argument("--version", action="version", version=f"faaso {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="build, launch, supervise and proxy the functions of a routes file"
    )
    serve.add_argument("config", type=Path, help="the routes file, e.g. conf/routes.yml")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    serve.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where faaso keeps its state (default: .faaso/ beside the config)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=15.0,
        help="seconds in-flight requests get to finish on shutdown (15)",
    )
    serve.add_argument(
        "--runtimes",
        type=Path,
        action="append",
        default=[],
        help="an extra folder of runtimes (may be repeated)",
    )
    serve.add_argument(
        "--no-auth", action="store_true", help="leave the /system API open (local use only)"
    )
    serve.add_argument(
        "--no-pull",
        action="store_true",
        help="never pull images from a registry: run only images this host has",
    )
    serve.add_argument(
        "--no-fast-path",
        action="store_true",
        help="serve every request with aiohttp (slower; for comparison and debugging)",
    )
    serve.add_argument(
        "--no-watch",
        action="store_true",
        help="do not watch the routes file and sources (SIGHUP still reloads)",
    )
    serve.add_argument(
        "--keep-images",
        type=_at_least(0),
        default=3,
        metavar="N",
        help="after each successful rollout, prune the function's images beyond the N newest "
        "(3; 0: never prune automatically)",
    )
    serve.add_argument(
        "--provider-mode",
        action="store_true",
        help="run as the provider behind an OpenFaaS gateway (its functions_provider_url): "
        "/system/info in the provider's shape, the gateway's metrics named faaso_*",
    )
    serve.add_argument(
        "--backend",
        choices=("docker", "swarm"),
        default=None,
        help="what runs the functions: plain Docker containers, or Docker Swarm services "
        "(default: the routes file's 'backend:', else docker)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log one line per request: method, path, function, status, duration, call id "
        "(also the routes file's server.access_log; off by default)",
    )
    serve.add_argument(
        "--metrics-auth",
        action="store_true",
        help="/metrics needs the API's basic auth (also server.metrics_auth)",
    )
    serve.add_argument(
        "--certfile",
        type=Path,
        default=None,
        help="serve HTTPS with this PEM certificate (chain); needs --keyfile "
        "(also server.certfile)",
    )
    serve.add_argument(
        "--keyfile", type=Path, default=None, help="the certificate's PEM private key"
    )
    options.add_logging(serve)
    serve.set_defaults(handler=_serve)

    prune = sub.add_parser(
        "prune",
        help="remove old images faaso built: tags beyond the N newest not used by any "
        "container, and old build stages",
    )
    prune.add_argument("functions", nargs="*", help="only these functions (default: all)")
    prune.add_argument(
        "--keep", type=_at_least(1), default=3, metavar="N", help="newest to keep (3)"
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    prune.add_argument("--json", action="store_true", help="print the result as JSON")
    options.add_logging(prune)
    prune.set_defaults(handler=_prune)

    check = sub.add_parser("check", help="validate a routes file and print what it defines")
    check.add_argument("config", type=Path)
    check.add_argument("--runtimes", type=Path, action="append", default=[])
    check.set_defaults(handler=_check)

    boot = sub.add_parser(
        "bootstrap",
        help="make sure the base image exists (pull it, or build it from the host's Debian mirror)",
    )
    boot.add_argument("--no-pull", action="store_true", help="do not try a registry first")
    options.add_logging(boot)
    boot.set_defaults(handler=_bootstrap)

    # Command groups that live in their own modules register themselves here.
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except ConfigError as exc:
        print(f"faaso: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FaasoError as exc:
        print(f"faaso: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _configure_logging(args: argparse.Namespace) -> None:
    from faaso import logs

    fmt = args.log_format
    logs.configure(args.log_level, json=None if fmt == "auto" else fmt == "json")


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from faaso.cli.run import run
    from faaso.config.routes_file import load_config
    from faaso.config.serving import server_settings, tls_context
    from faaso.server.app import create_app
    from faaso.server.serve import ServerOptions, run_server
    from faaso.state.paths import default_state_dir

    _configure_logging(args)
    config = load_config(args.config, tuple(args.runtimes))
    state_dir = args.state_dir or default_state_dir(config.path)
    settings, source, prefix = server_settings(
        config.server,
        config.path,
        access_log=args.access_log,
        metrics_auth=args.metrics_auth,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )
    options = ServerOptions(
        host=args.host,
        port=args.port,
        drain_timeout=args.drain_timeout,
        fast_path=not args.no_fast_path,
        ssl_context=tls_context(settings, source, prefix),
    )

    def make_app() -> web.Application:
        return create_app(
            config,
            state_dir,
            extra_runtime_dirs=tuple(args.runtimes),
            watch=not args.no_watch,
            auth=not args.no_auth,
            pull=not args.no_pull,
            drain_timeout=args.drain_timeout,
            keep_images=args.keep_images,
            provider_mode=args.provider_mode,
            backend_name=args.backend,
            access_log=settings.access_log,
            metrics_auth=settings.metrics_auth,
        )

    async def main() -> None:
        await run_server(state_dir, make_app, options)

    run(main)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from faaso.config.cors import cors_table
    from faaso.config.routes_file import load_config
    from faaso.config.serving import tls_context

    config = load_config(args.config, tuple(args.runtimes))
    server = config.server
    if server.certfile is not None:
        tls_context(server, config.path, "server.")  # loads them: a key of another cert fails
    print(f"{config.path}: ok")
    policies = cors_table(config.cors, config.function_cors, config.functions)
    for name, spec in sorted(config.functions.items()):
        what = f"image {spec.image}" if spec.image else f"{spec.runtime} runtime, {spec.source}"
        print(f"  function {name}: {what}, replicas {spec.replicas}")
        if name in config.function_cors:
            origin = "its own cors: block"
        elif any(k.startswith("faaso.cors.") for k in spec.annotations):
            origin = "its faaso.cors.* annotations"
        else:
            origin = "the top-level cors: block"
        policy = policies.get(name)
        if policy is not None:
            print(f"    cors ({origin}): {_cors_text(policy)}")
        elif name in config.function_cors:
            print("    cors: off (cors: false)")
    for prefix, name in sorted(config.routes.items()):
        print(f"  route {prefix} -> {name}")
    print(f"  cors (top level): {_cors_text(config.cors) if config.cors else 'none'}")
    if server.certfile is not None:
        print(
            f"  serving: HTTPS, certificate {server.certfile}, key {server.keyfile} "
            "(they load and belong together)"
        )
    else:
        print("  serving: HTTP (no certfile/keyfile)")
    print(
        f"  serving: access log {'on' if server.access_log else 'off'}, /metrics "
        f"{'behind the password' if server.metrics_auth else 'public'} "
        "(read at start; faaso serve's --access-log, --metrics-auth, --certfile/--keyfile "
        "change them)"
    )
    return EXIT_OK


def _cors_text(policy: CorsPolicy) -> str:
    """One line for a CORS policy, as `faaso check` prints it."""
    parts = [
        f"origins {', '.join(policy.allow_origins)}",
        f"methods {', '.join(policy.allow_methods)}",
        f"headers {', '.join(policy.allow_headers) or 'none'}",
        f"max_age {policy.max_age if policy.max_age is not None else 'not said'}",
        f"credentials {'yes' if policy.allow_credentials else 'no'}",
    ]
    return "; ".join(parts)


def _bootstrap(args: argparse.Namespace) -> int:
    from faaso.build import engine as docker_client
    from faaso.build.baseimage import BASE_IMAGE, ensure_base_image
    from faaso.cli.run import run
    from faaso.logs import get_logger

    _configure_logging(args)

    async def main() -> str:
        docker = await docker_client.connect()
        try:
            return await ensure_base_image(
                docker, get_logger("faaso.bootstrap"), allow_pull=not args.no_pull
            )
        finally:
            await docker.close()

    image = run(main)
    print(f"{BASE_IMAGE} {image}")
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    from faaso.build import engine as docker_client
    from faaso.build.prune import PruneResult, prune
    from faaso.cli.run import run
    from faaso.logs import get_logger

    _configure_logging(args)

    async def main() -> PruneResult:
        docker = await docker_client.connect()
        try:
            return await prune(
                docker,
                get_logger("faaso.prune"),
                keep=args.keep,
                functions=args.functions or None,
                dry_run=args.dry_run,
            )
        finally:
            await docker.close()

    result = run(main)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        verb = "would remove" if args.dry_run else "removed"
        for tag in result.tags:
            print(f"{verb} {tag}")
        for image in result.images:
            print(f"{verb} untagged {image[:19]}")
        print(
            f"kept {len(result.kept)} tags; {verb} {len(result.tags)} tags and "
            f"{len(result.images)} untagged images"
        )
        for error in result.errors:
            print(f"could not remove {error}", file=sys.stderr)
    return EXIT_FAILURE if result.errors else EXIT_OK
