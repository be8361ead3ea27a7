"""``python -m mlshift_azureml.testing run SCRIPT [ARGS...]``: run a script against the fake.

The script runs unchanged, as ``python SCRIPT ARGS`` would run it, while a
:class:`~mlshift_azureml.testing.FakeAzureML` is active, so every ``azureml://`` target it
connects to is the fake. ``run -m MODULE [ARGS...]`` runs a module instead (for example the
CLI: ``python -m mlshift_azureml.testing run -m mlshift.cli deploy ...``).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Sequence

_PROG = "python -m mlshift_azureml.testing"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a script (or -m module) against the fake")
    run.add_argument("-m", dest="module", help="run a module as a script")
    run.add_argument("--region", default="eastus", help="the fake's region")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the script and its arguments")
    options = parser.parse_args(argv)
    if not options.module and not options.args:
        parser.error("run needs a script path or -m MODULE")

    from mlshift_azureml.testing import FakeAzureML

    saved = sys.argv[:]
    try:
        with FakeAzureML(options.region):
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


if __name__ == "__main__":
    sys.exit(main())
