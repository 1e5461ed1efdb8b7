"""Command-line options more than one ``faaso`` command takes."""

from __future__ import annotations

import argparse


def add_logging(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``, for the commands that log."""
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "console", "json"],
        help="console on a terminal, JSON lines otherwise (default: auto)",
    )
