"""``python -m mlshift.image``: build the serving image, make its base offline, or serve (inside it).

Exit codes: 0 on success, 2 for a bad argument, 1 when Docker, pip or debootstrap failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlshift.errors import ConfigError, MlshiftError

_PROG = "python -m mlshift.image"

_EPILOG = """\
examples:
  %(prog)s base                                  # once, where no registry is reachable
  %(prog)s build                                 # mlshift-serving:VERSION, scikit-learn only
  %(prog)s build --frameworks sklearn,onnx
  %(prog)s build --base-image python:3.11-slim   # where Docker Hub is reachable

The image installs mlshift from wheels built here (or --wheels), never from a package index.
DOCKER_HOST selects the Docker engine.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="The mlshift serving image: one image for SageMaker, Vertex AI, Azure ML and "
        "local+docker://.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser("build", help="build the serving image from host-built wheels")
    build.add_argument(
        "--frameworks", help="comma-separated framework sets: sklearn, onnx (default: sklearn)"
    )
    build.add_argument("--tag", help="image name (default: mlshift-serving:VERSION[-FRAMEWORKS])")
    build.add_argument("--base-image", help="BASE_IMAGE build argument (default: mlshift-base:bookworm)")
    build.add_argument("--wheels", type=Path, help="folder of wheels to install instead of building them")
    build.add_argument("--context", type=Path, help="write the build context here and keep it")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer (ignore the build cache)")
    build.add_argument(
        "--extra-packages",
        action="append",
        metavar="SPECS",
        help="packages to add, e.g. 'xgboost==2.1.1 lightgbm>=4' (repeatable; needs --tag)",
    )
    base = commands.add_parser("base", help="make the base image offline from Debian packages")
    base.add_argument("--name", help="image name (default: mlshift-base:bookworm)")
    base.add_argument("--suite", help="Debian release (default: bookworm, whose Python is 3.11)")
    base.add_argument("--mirror", help="Debian mirror (default: http://deb.debian.org/debian)")
    base.add_argument("--force", action="store_true", help="make it again even if it exists")
    commands.add_parser(
        "serve",
        help="start the model server (the image's command)",
        description="Serve the model the platform mounted, as its environment describes it "
        "(SageMaker, Vertex AI, Azure ML or local+docker://).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from mlshift.image._serve import serve

            return serve()
        if args.command == "base":
            from mlshift.image._base import DEFAULT_MIRROR, DEFAULT_SUITE, make_base_image
            from mlshift.image._build import DEFAULT_BASE_IMAGE

            make_base_image(
                args.name or DEFAULT_BASE_IMAGE,
                suite=args.suite or DEFAULT_SUITE,
                mirror=args.mirror or DEFAULT_MIRROR,
                force=args.force,
            )
            return 0
        from mlshift.image._build import build_image

        print(
            build_image(
                args.tag,
                frameworks=args.frameworks,
                base_image=args.base_image,
                wheels=args.wheels,
                context=args.context,
                no_cache=args.no_cache,
                extra_packages=args.extra_packages,
            )
        )
        return 0
    except MlshiftError as exc:
        line = f"{_PROG}: error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else "")
        print(line, file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
