"""A short answer, not a traceback, when `dagster asset materialize` is given no category or an unknown one.

Dagster's CLI checks the partition itself, after it has imported this code location and before it runs
anything, and raises a bare error that Python prints as a traceback. The code location is imported inside
that command's process, so it installs an exception hook there; other errors keep their traceback, and
other processes (the webserver, code servers, tests) are left alone.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import TracebackType

import click
from dagster import DagsterInvalidSubsetError
from dagster_shared.check import CheckError

from sp_assets.defs.partitions import ACTIVE_POLICY

# The commands that run Dagster's asset materialize code in their own process: `dagster asset
# materialize` and `dg launch --assets`.
MATERIALIZE_COMMANDS = {("asset", "materialize"), ("launch",)}
# Dagster 1.13's own wording of the two errors; another wording falls back to the traceback.
MISSING_PARTITION = "no '--partition' option was provided"
UNKNOWN_PARTITION = "containing the passed partition key"
PARTITION_OPTIONS = ("--partition", "--partition-range")


def _without_partition(command: list[str]) -> tuple[list[str], str | None]:
    """`command` without its partition options, and the value the user gave to the first of them."""
    kept, given, skip = [], None, False
    for i, arg in enumerate(command):
        name, _, inline = arg.partition("=")
        if skip:
            skip = False
        elif name in PARTITION_OPTIONS:
            skip = not inline
            value = inline or (command[i + 1] if i + 1 < len(command) else "")
            given = value if given is None else given
        else:
            kept.append(arg)
    return kept, given


def _shown(path: Path) -> str:
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def partition_hint(message: str, command: list[str]) -> str | None:
    """What to tell the user who ran `command` and got Dagster's partition error `message`; None for others."""
    base, given = _without_partition(command)
    policy = ACTIVE_POLICY
    if MISSING_PARTITION in message:
        head = "every stage is partitioned by policy category; name one with --partition."
    elif UNKNOWN_PARTITION in message:
        head = f"{given!r} is not a category of the policy {_shown(policy.path)}."
    else:
        return None
    first, last = policy.slugs[0], policy.slugs[-1]
    return "\n".join([
        f"Error: {head}",
        f"Categories ({_shown(policy.path)}): {', '.join(policy.slugs)}",
        "One category:",
        "  " + shlex.join([*base, "--partition", first]),
        "All of them in one run:",
        "  " + shlex.join([*base, "--partition-range", f"{first}...{last}"]),
    ])


def _command_names(ctx: click.Context) -> tuple[str, ...]:
    names = []
    while ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return tuple(names)


def answer_partition_errors() -> None:
    """Inside a materialize command, print `partition_hint` instead of the traceback of a partition error."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or _command_names(ctx) not in MATERIALIZE_COMMANDS or getattr(sys.excepthook, "sp_hint", False):
        return
    command = [ctx.find_root().info_name or "dagster", *sys.argv[1:]]
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        hint = partition_hint(str(error), command) if isinstance(error, (CheckError, DagsterInvalidSubsetError)) else None
        if hint is None:
            previous(kind, error, tb)
        else:
            print(hint, file=sys.stderr)

    hook.sp_hint = True  # type: ignore[attr-defined]
    sys.excepthook = hook
