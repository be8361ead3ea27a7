"""The mlshift serving image on SageMaker: the core image (:mod:`mlshift.image`) with this
adapter added, and the commands that build it and push it to your ECR.

``python -m mlshift_sagemaker.image --help`` lists the commands::

    python -m mlshift_sagemaker.image build                                  # docker build, locally
    python -m mlshift_sagemaker.image push --target sagemaker://us-east-1    # build, then push to ECR

Inside the image, SageMaker's ``serve`` argument starts the core image's model server (``python
-m mlshift.image serve``). The package also holds the inference script mlshift packages for
AWS's prebuilt scikit-learn image (:mod:`mlshift_sagemaker.image.sklearn_inference`). See
"Serving images" in ``docs/targets/sagemaker.md``.
"""

from __future__ import annotations

from mlshift_sagemaker.image._commands import build_image, default_tag, local_image, push_image

__all__ = ["build_image", "default_tag", "local_image", "push_image"]
