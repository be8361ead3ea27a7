"""``python -m mlshift_azureml.testing run SCRIPT [ARGS...]``: run a script against the fake.

The script runs unchanged, as ``python SCRIPT ARGS`` would run it, while a
:class:`~mlshift_azureml.testing.FakeAzureML` is active, so every ``azureml://`` target it
connects to is the fake. ``run -m MODULE [ARGS...]`` runs a module instead (for example the
CLI: ``python -m mlshift_azureml.testing run -m mlshift.cli deploy ...``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from mlshift.testing.runner import KitOption, run_with_kit


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""

    def kit(value: str) -> AbstractContextManager[Any]:
        from mlshift_azureml.testing import FakeAzureML

        return FakeAzureML(value)

    return run_with_kit(
        "python -m mlshift_azureml.testing", kit, KitOption("--region", "eastus", "the fake's region"), argv
    )


if __name__ == "__main__":
    sys.exit(main())
