"""``python -m mlshift_sagemaker.image``: build the SageMaker serving image and push it to ECR.

Exit codes: 0 on success, 2 for a bad argument or option, 1 when AWS, pip or docker failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlshift.errors import ConfigError, MlshiftError

_PROG = "python -m mlshift_sagemaker.image"

_DESCRIPTION = """\
The mlshift serving image for SageMaker: mlshift's one serving image (`mlshift image build`),
which answers SageMaker's container contract (GET /ping, POST /invocations on port 8080) for the
model in /opt/ml/model, with mlshift-sagemaker added for pipeline steps. A sagemaker:// target
uses it unless an endpoint or the target sets image_uri or image: prebuilt, and planning fails
until it is in your ECR: `push` puts it there.
"""

_EPILOG = """\
examples:
  %(prog)s push --target sagemaker://us-east-1
  %(prog)s push --target prod                       # a target named in mlshift.yaml
  %(prog)s build --frameworks sklearn               # a smaller image: scikit-learn models only
  %(prog)s build --base-image my-registry/python:3.11 --wheels ./wheels

The image installs mlshift and mlshift-sagemaker from wheels built here (or --wheels), never
from a package index inside the build. Its base is the offline Debian image `mlshift image base`
makes, or --base-image with the Python those wheels are for. DOCKER_HOST selects the engine.
"""


def _build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frameworks", help="comma-separated framework sets: sklearn, onnx (default: all of them)"
    )
    parser.add_argument(
        "--base-image",
        help="BASE_IMAGE build argument (default: mlshift-base:bookworm, from `mlshift image base`)",
    )
    parser.add_argument(
        "--wheels",
        type=Path,
        help="folder of wheels to install (default: build mlshift and mlshift-sagemaker here)",
    )
    parser.add_argument("--context", type=Path, help="write the build context here and keep it")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="build the serving image locally",
        description="Build the serving image locally (no AWS call), as mlshift-serving:VERSION-sagemaker.",
    )
    build.add_argument("--local-image", help="local image name (default: mlshift-serving:VERSION-sagemaker)")
    _build_options(build)

    push = commands.add_parser(
        "push",
        help="build the image and push it to the target's ECR",
        description="Build the serving image (unless --no-build), create the ECR repository if it "
        "is missing, log docker in with an ECR token (through stdin), tag and push.",
    )
    push.add_argument(
        "--target",
        help="sagemaker://REGION or a target name from mlshift.yaml (default: $MLSHIFT_TARGET, then "
        "mlshift.yaml's default_target)",
    )
    push.add_argument("--repository", help="ECR repository (default: the target's ecr_repository option)")
    push.add_argument("--tag", help="image tag (default: the mlshift version, which the target looks for)")
    push.add_argument(
        "--no-build", action="store_true", help="push an image built before (see --local-image)"
    )
    push.add_argument(
        "--local-image",
        help="local image to push (default: mlshift-serving:TAG-sagemaker, as build names it)",
    )
    push.add_argument("--docker", default="docker", help="docker or podman executable for the push")
    _build_options(push)
    return parser


def _build(args: argparse.Namespace, local: str) -> None:
    from mlshift_sagemaker.image import _commands

    _commands.build_image(
        local,
        frameworks=args.frameworks,
        base_image=args.base_image,
        wheels=args.wheels,
        context=args.context,
        no_cache=args.no_cache,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the process exit code."""
    args = _parser().parse_args(argv)
    from mlshift_sagemaker.image import _commands

    try:
        if args.command == "build":
            local = args.local_image or _commands.local_image()
            _build(args, local)
            print(local)
            return 0
        return _push(args, args.tag or _commands.default_tag())
    except ConfigError as exc:
        return _fail(exc, 2)
    except MlshiftError as exc:
        return _fail(exc, 1)


def _push(args: argparse.Namespace, tag: str) -> int:
    import mlshift
    from mlshift_sagemaker._adapter import SageMakerAdapter
    from mlshift_sagemaker.image import _commands

    with mlshift.connect(args.target) as client:
        adapter = client.adapter
        if not isinstance(adapter, SageMakerAdapter):
            raise ConfigError(
                f"{adapter.uri.raw} is not a sagemaker:// target",
                field="--target",
                hint="pass --target sagemaker://REGION or the name of a sagemaker target",
            )
        repository = args.repository or adapter.options.ecr_repository
        local = args.local_image or _commands.local_image(tag)
        if not args.no_build:
            _build(args, local)
        uri = _commands.push_image(
            adapter, local_image=local, repository=repository, tag=tag, docker=args.docker
        )
    print(uri)
    return 0


def _fail(exc: MlshiftError, code: int) -> int:
    line = f"{_PROG}: error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else "")
    print(line.replace("\n", " "), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
