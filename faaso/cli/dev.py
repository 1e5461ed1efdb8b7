"""The developer's commands: ``faaso new | runtimes | build | test | run | export``.

Registered by :mod:`faaso.cli.main`; the work is done by :mod:`faaso.dev.loop`. Results go to stdout
(the image tag, one line per test), progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from faaso.cli import options
from faaso.config.runtimes import RuntimeCatalog

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

EXIT_OK = 0
EXIT_FAILURE = 1


def _add_runtimes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtimes",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="an extra folder of runtimes, searched before the built-in ones (may be repeated)",
    )


def _add_function_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the function's folder (its name is the folder's)")
    parser.add_argument(
        "--runtime",
        default=None,
        help="runtime when function.yml names none (default: python)",
    )
    _add_runtimes(parser)
    options.add_logging(parser)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    new = sub.add_parser("new", help="start a function folder from a runtime's template")
    new.add_argument("name", help="the function's name (lowercase letters, digits and '-')")
    new.add_argument("--runtime", default="python", help="the runtime to start from (python)")
    new.add_argument(
        "--dir",
        type=Path,
        default=Path(),
        help="the folder to create NAME/ in (default: the current folder)",
    )
    _add_runtimes(new)
    new.set_defaults(handler=_new)

    runtimes = sub.add_parser("runtimes", help="list the runtimes and what they are")
    _add_runtimes(runtimes)
    runtimes.set_defaults(handler=_runtimes)

    build = sub.add_parser("build", help="build a function's image; prints its tag")
    _add_function_dir(build)
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.set_defaults(handler=_build)

    test = sub.add_parser(
        "test", help="run the tests of a function's function.yml against a fresh container"
    )
    _add_function_dir(test)
    test.set_defaults(handler=_test)

    run = sub.add_parser(
        "run", help="serve one function locally; rebuild and restart it when its files change"
    )
    _add_function_dir(run)
    run.add_argument(
        "--port", type=int, default=8080, help="port on 127.0.0.1 to serve it on (8080)"
    )
    run.set_defaults(handler=_run)

    export = sub.add_parser("export", help="write a function's image as a docker-load tarball")
    _add_function_dir(export)
    export.add_argument("out", type=Path, help="the tarball to write, e.g. sum.tar")
    export.set_defaults(handler=_export)


def _catalog(args: argparse.Namespace) -> RuntimeCatalog:
    for folder in args.runtimes:
        if not folder.is_dir():
            from faaso.errors import DevError

            raise DevError(f"--runtimes {folder}: not a directory")
    return RuntimeCatalog(tuple(args.runtimes))


def _logger(args: argparse.Namespace, name: str) -> FilteringBoundLogger:
    from faaso import logs

    fmt = args.log_format
    logs.configure(args.log_level, json=None if fmt == "auto" else fmt == "json")
    return logs.get_logger(name)


def _new(args: argparse.Namespace) -> int:
    from faaso.dev.loop import new_function

    target = new_function(args.name, args.runtime, args.dir, _catalog(args))
    print(f"created {target} ({args.runtime} runtime)")
    print(f"next: faaso test {target}   or   faaso run {target}")
    return EXIT_OK


def _runtimes(args: argparse.Namespace) -> int:
    from faaso.config.runtimes import builtin_runtimes_dir
    from faaso.dev.loop import runtime_list

    found = runtime_list(_catalog(args))
    width = max((len(r.name) for r in found), default=0)
    builtin = builtin_runtimes_dir().resolve()
    for runtime in found:
        where = "" if runtime.path.parent == builtin else f" [{runtime.path}]"
        description = " ".join(runtime.description.split())
        print(f"{runtime.name:<{width}}  {description}{where}")
    return EXIT_OK


def _build(args: argparse.Namespace) -> int:
    from faaso.cli.run import run
    from faaso.dev import loop as devloop

    log = _logger(args, "faaso.build")
    catalog = _catalog(args)
    fdir = devloop.load_function_dir(args.dir, catalog, args.runtime)
    tag = run(lambda: devloop.build(fdir, catalog, log, nocache=args.no_cache))
    print(tag)
    return EXIT_OK


def _test(args: argparse.Namespace) -> int:
    from faaso.cli.run import run
    from faaso.dev import loop as devloop

    log = _logger(args, "faaso.test")
    catalog = _catalog(args)
    fdir = devloop.load_function_dir(args.dir, catalog, args.runtime)
    if not fdir.tests:
        print(f"{fdir.name}: no tests in {fdir.source / 'function.yml'}", file=sys.stderr)
        return EXIT_OK

    def report(result: devloop.TestResult) -> None:
        case = result.case
        line = f"{'PASS' if result.ok else 'FAIL'}  {fdir.name} test {case.index + 1}: "
        line += f"{case.describe()} -> {result.status if result.status is not None else '-'}"
        if not result.ok:
            line += "\n" + "\n".join(f"      {p}" for p in result.problems)
        print(line, flush=True)

    results = run(lambda: devloop.run_tests(fdir, catalog, log, report))
    failed = sum(1 for r in results if not r.ok)
    print(f"{fdir.name}: {len(results) - failed} passed, {failed} failed")
    return EXIT_FAILURE if failed else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from faaso.cli.run import run
    from faaso.dev import loop as devloop

    log = _logger(args, "faaso.run")
    catalog = _catalog(args)
    fdir = devloop.load_function_dir(args.dir, catalog, args.runtime)

    def output(line: str) -> None:
        print(f"{fdir.name} | {line}", file=sys.stderr, flush=True)

    def serving(url: str, image: str) -> None:
        print(f"{fdir.name} serving at {url} ({image})", flush=True)

    dev = devloop.DevRun(fdir, catalog, log, port=args.port, on_output=output, on_serving=serving)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: DevRun removes its container
        run(dev.run)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from faaso.cli.run import run
    from faaso.dev import loop as devloop

    log = _logger(args, "faaso.export")
    catalog = _catalog(args)
    fdir = devloop.load_function_dir(args.dir, catalog, args.runtime)
    tag, size = run(lambda: devloop.export(fdir, args.out, catalog, log))
    print(f"{args.out}: {tag} ({size / 1e6:.1f} MB); load it with: docker load -i {args.out}")
    return EXIT_OK
