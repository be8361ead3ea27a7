"""The ``python -m ADAPTER.testing run SCRIPT`` command every adapter's testing kit offers.

A kit (a fake of a cloud's API) is a context manager; :func:`run_with_kit` parses the command
line, enters the kit and runs a script or module unchanged inside it, so every target of that
cloud the script connects to is the fake::

    # mlshift_example/testing/__main__.py
    from mlshift.testing.runner import KitOption, run_with_kit

    def main(argv=None):
        return run_with_kit(
            "python -m mlshift_example.testing",
            lambda region: FakeExample(region),
            KitOption("--region", "us-east-1", "the fake's region"),
            argv,
        )
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["KitOption", "run_with_kit"]


@dataclass(frozen=True)
class KitOption:
    """The one setting a kit takes on the command line (its region, its bucket...)."""

    flag: str
    default: str
    help: str


def run_with_kit(
    prog: str,
    make_kit: Callable[[str], AbstractContextManager[Any]],
    option: KitOption,
    argv: Sequence[str] | None = None,
) -> int:
    """Run ``prog run [OPTION] SCRIPT ARGS`` (or ``run -m MODULE ARGS``) inside ``make_kit``.

    Args:
        prog: How the command is invoked, for ``--help`` and usage errors.
        make_kit: Builds the kit from the option's value; entered around the script.
        option: The kit's one command-line setting.
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The script's exit code (0 when it returns normally).
    """
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a script or module unchanged against the testing kit."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a script (or -m module) against the fake")
    run.add_argument("-m", dest="module", help="run a module as a script")
    run.add_argument(option.flag, dest="kit_option", default=option.default, help=option.help)
    run.add_argument("args", nargs=argparse.REMAINDER, help="the script and its arguments")
    given = list(sys.argv[1:] if argv is None else argv)
    # Everything after `-m MODULE` belongs to the module (as with `python -m`), options too;
    # argparse would read them as the runner's own.
    module_args: list[str] | None = None
    i = given.index("run") + 1 if "run" in given else len(given)
    while i < len(given):
        token = given[i]
        if token == "-m" and i + 1 < len(given):
            module_args, given = given[i + 2 :], given[: i + 2]
            break
        if token == option.flag:
            i += 2
        elif token.startswith(option.flag + "=") or token in ("-h", "--help"):
            i += 1
        else:
            break  # the script path: the rest is the script's
    options = parser.parse_args(given)
    if module_args is not None:
        options.args = module_args
    if not options.module and not options.args:
        parser.error("run needs a script path or -m MODULE")
    saved = sys.argv[:]
    try:
        with make_kit(options.kit_option):
            if options.module:
                sys.argv = [options.module, *options.args]
                runpy.run_module(options.module, run_name="__main__", alter_sys=True)
            else:
                sys.argv = list(options.args)
                runpy.run_path(options.args[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0
