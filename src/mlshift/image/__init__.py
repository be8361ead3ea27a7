"""The one serving image for every cloud and for ``local+docker://``.

``mlshift image build`` (or ``python -m mlshift.image build``) builds it from wheels made on
the host, so no package index is needed inside the build; ``mlshift image base`` makes its
base image offline from Debian packages where no registry is reachable. Inside the image,
``serve`` starts the model server for whichever platform's environment it finds.

Public names are imported on first use: the image's ``serve`` command (every container's
start) does not pay for the build machinery, and nothing here imports the Docker SDK until
building or running needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlshift._lazy import lazy_exports

if TYPE_CHECKING:
    from mlshift.image._base import DEFAULT_MIRROR, DEFAULT_SUITE, base_cache_dir, make_base_image
    from mlshift.image._build import (
        BASE_LABEL,
        DEFAULT_BASE_IMAGE,
        DEFAULT_FRAMEWORKS,
        FRAMEWORKS,
        IMAGE_REPOSITORY,
        INPUTS_LABEL,
        build_context,
        build_image,
        default_image,
        image_inputs,
        outdated_because,
        parse_extra_packages,
        parse_frameworks,
        project_wheel,
        wheel_cache_dir,
    )
    from mlshift.image._engine import docker_client, image_exists
    from mlshift.image._serve import SAGEMAKER_MODEL_DIR, model_path, serve_arguments

_LAZY: dict[str, str] = {
    **dict.fromkeys(["DEFAULT_MIRROR", "DEFAULT_SUITE", "base_cache_dir", "make_base_image"], "._base"),
    **dict.fromkeys(
        [
            "BASE_LABEL",
            "DEFAULT_BASE_IMAGE",
            "DEFAULT_FRAMEWORKS",
            "FRAMEWORKS",
            "IMAGE_REPOSITORY",
            "INPUTS_LABEL",
            "build_context",
            "build_image",
            "default_image",
            "image_inputs",
            "outdated_because",
            "parse_extra_packages",
            "parse_frameworks",
            "project_wheel",
            "wheel_cache_dir",
        ],
        "._build",
    ),
    **dict.fromkeys(["docker_client", "image_exists"], "._engine"),
    **dict.fromkeys(["SAGEMAKER_MODEL_DIR", "model_path", "serve_arguments"], "._serve"),
}

__all__ = [
    "BASE_LABEL",
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_FRAMEWORKS",
    "DEFAULT_MIRROR",
    "DEFAULT_SUITE",
    "FRAMEWORKS",
    "IMAGE_REPOSITORY",
    "INPUTS_LABEL",
    "SAGEMAKER_MODEL_DIR",
    "base_cache_dir",
    "build_context",
    "build_image",
    "default_image",
    "docker_client",
    "image_exists",
    "image_inputs",
    "make_base_image",
    "model_path",
    "outdated_because",
    "parse_extra_packages",
    "parse_frameworks",
    "project_wheel",
    "serve_arguments",
    "wheel_cache_dir",
]


__getattr__ = lazy_exports(globals(), _LAZY)[0]


def __dir__() -> list[str]:
    # All that is defined here and every lazy name, not only the public ones.
    return sorted([*globals(), *_LAZY])
