"""``python -m mlshift_sagemaker.testing run SCRIPT [ARGS...]``: run a script against the fake.

The script runs unchanged, as ``python SCRIPT ARGS`` would run it, while a
:class:`~mlshift_sagemaker.testing.FakeSageMaker` is active, so every ``sagemaker://`` target
it connects to is the fake. ``run -m MODULE [ARGS...]`` runs a module instead (for example the
CLI: ``python -m mlshift_sagemaker.testing run -m mlshift.cli deploy ...``).
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
        from mlshift_sagemaker.testing import FakeSageMaker

        return FakeSageMaker(value)

    return run_with_kit(
        "python -m mlshift_sagemaker.testing",
        kit,
        KitOption("--region", "us-east-1", "the fake's default region"),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
