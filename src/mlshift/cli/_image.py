"""``mlshift image ...``: build the serving image, make its base image offline.

Only typer is imported at module level (``mlshift --help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlshift.cli import _output as ui
from mlshift.cli._options import OutputOpt

__all__ = ["image_app"]

image_app = typer.Typer(
    help="Build the one serving image (SageMaker, Vertex AI, Azure ML, local+docker://) and its base.",
    no_args_is_help=True,
)


@image_app.command("build")
def build(
    frameworks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated framework sets: sklearn, onnx (default: sklearn).", show_default=False
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(help="Image name (default: mlshift-serving:VERSION[-FRAMEWORKS]).", show_default=False),
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option(help="BASE_IMAGE build argument (default: mlshift-base:bookworm).", show_default=False),
    ] = None,
    wheels: Annotated[
        Path | None,
        typer.Option(help="Folder of wheels to install instead of building them here.", show_default=False),
    ] = None,
    context: Annotated[
        Path | None, typer.Option(help="Write the build context here and keep it.", show_default=False)
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Rebuild every layer (ignore Docker's build cache).")
    ] = False,
    extra_packages: Annotated[
        list[str] | None,
        typer.Option(
            "--extra-packages",
            help="Packages to add beyond the frameworks, e.g. 'xgboost==2.1.1 lightgbm>=4' (repeatable; "
            "needs --tag).",
            show_default=False,
        ),
    ] = None,
    output: OutputOpt = "table",
) -> None:
    """Build the serving image from wheels made on this machine (no package index in the build)."""
    from mlshift.image import build_image

    ui.check_output(output)
    built = build_image(
        tag,
        frameworks=frameworks,
        base_image=base_image,
        wheels=wheels,
        context=context,
        no_cache=no_cache,
        extra_packages=extra_packages,
    )
    if output == "json":
        ui.print_json({"image": built})
    else:
        typer.echo(built)


@image_app.command("base")
def base(
    name: Annotated[str, typer.Option(help="Image name.")] = "mlshift-base:bookworm",
    suite: Annotated[str, typer.Option(help="Debian release (bookworm has Python 3.11).")] = "bookworm",
    mirror: Annotated[str, typer.Option(help="Debian mirror.")] = "http://deb.debian.org/debian",
    force: Annotated[bool, typer.Option("--force", help="Make it again even if it exists.")] = False,
    output: OutputOpt = "table",
) -> None:
    """Make the base image offline from Debian packages (debootstrap + docker import; root, once).

    The root filesystem is cached in ~/.cache/mlshift/base ($MLSHIFT_CACHE_DIR/base).
    """
    from mlshift.image import make_base_image

    ui.check_output(output)
    made = make_base_image(name, suite=suite, mirror=mirror, force=force)
    if output == "json":
        ui.print_json({"image": made})
    else:
        typer.echo(made)
