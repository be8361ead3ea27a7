"""The one serving image for every cloud and for ``local+docker://``.

``mlshift image build`` (or ``python -m mlshift.image build``) builds it from wheels made on
the host, so no package index is needed inside the build; ``mlshift image base`` makes its
base image offline from Debian packages where no registry is reachable. Inside the image,
``serve`` starts the model server for whichever platform's environment it finds.

Importing this package does not import the Docker SDK: only building and running do.
"""

from __future__ import annotations

from mlshift.image._base import DEFAULT_MIRROR, DEFAULT_SUITE, base_cache_dir, make_base_image
from mlshift.image._build import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_FRAMEWORKS,
    FRAMEWORKS,
    IMAGE_REPOSITORY,
    build_context,
    build_image,
    default_image,
    parse_extra_packages,
    parse_frameworks,
    wheel_cache_dir,
)
from mlshift.image._engine import docker_client, image_exists
from mlshift.image._serve import SAGEMAKER_MODEL_DIR, model_path, serve_arguments

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_FRAMEWORKS",
    "DEFAULT_MIRROR",
    "DEFAULT_SUITE",
    "FRAMEWORKS",
    "IMAGE_REPOSITORY",
    "SAGEMAKER_MODEL_DIR",
    "base_cache_dir",
    "build_context",
    "build_image",
    "default_image",
    "docker_client",
    "image_exists",
    "make_base_image",
    "model_path",
    "parse_extra_packages",
    "parse_frameworks",
    "serve_arguments",
    "wheel_cache_dir",
]
