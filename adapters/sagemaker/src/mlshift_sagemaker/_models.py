"""The model registry on SageMaker: a model package group per model, a model package per version.

- Versions are SageMaker's ``ModelPackageVersion`` numbers (assigned atomically by SageMaker, so
  two processes registering at once never get the same number).
- The artifact lives in S3 under its digest (core's :class:`mlshift.storage.ArtifactStore` on
  the bucket, see :mod:`mlshift_sagemaker._store`); the package's
  container points at it, uncompressed.
- Digest, framework and the card's location are ``CustomerMetadataProperties`` of the package;
  the card (signature, metrics, tags) is a JSON object in S3 that the package also lists as its
  model-quality statistics, so metrics show in SageMaker Studio.
- Aliases are tags on the group (``mlshift:alias:champion = 3``); ``approved`` is SageMaker's
  own approval status, so pipelines that deploy "the latest approved package" see the same thing.
"""

from __future__ import annotations

import builtins
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.adapter import Artifact
from mlshift.errors import Conflict, NotFound
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion, Signature
from mlshift_sagemaker.errors import aws_errors

if TYPE_CHECKING:
    from mlshift_sagemaker._adapter import SageMakerAdapter

__all__ = ["APPROVED", "SageMakerModelRegistry"]

#: The alias that is SageMaker's approval status rather than a tag.
APPROVED = "approved"
ALIAS_TAG = "mlshift:alias:"
_DIGEST, _FRAMEWORK, _CARD, _ARTIFACT = (
    "mlshift:digest",
    "mlshift:framework",
    "mlshift:card",
    "mlshift:artifact",
)


class SageMakerModelRegistry:
    """``ModelRegistry`` on SageMaker model package groups."""

    def __init__(self, adapter: SageMakerAdapter) -> None:
        self._adapter = adapter
        # Package details that never change (everything but approval status), by ARN.
        self._details: dict[str, dict[str, Any]] = {}
        self._cards: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def _sm(self) -> Any:
        return self._adapter.clients.client("sagemaker")

    # ---------------------------------------------------------------- reading

    def _summaries(self, name: str) -> builtins.list[dict[str, Any]]:
        """The group's packages, oldest first (empty if the group does not exist)."""
        out: builtins.list[dict[str, Any]] = []
        with aws_errors(f"list versions of model {name!r}"):
            pages = self._sm.get_paginator("list_model_packages").paginate(
                ModelPackageGroupName=name, SortBy="CreationTime", SortOrder="Ascending"
            )
            for page in pages:
                out.extend(page.get("ModelPackageSummaryList", []))
        return out

    def _detail(self, arn: str) -> dict[str, Any]:
        detail = self._details.get(arn)
        if detail is None:
            with aws_errors(f"describe model package {arn}"):
                raw = self._sm.describe_model_package(ModelPackageName=arn)
            detail = {
                "version": str(raw.get("ModelPackageVersion", "")),
                "metadata": dict(raw.get("CustomerMetadataProperties") or {}),
                "description": raw.get("ModelPackageDescription") or None,
                "created_at": raw.get("CreationTime") or datetime.now(timezone.utc),
            }
            with self._lock:
                self._details[arn] = detail
        return detail

    def _ours(self, summaries: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Packages mlshift registered (others carry no digest and cannot be served by it)."""
        return [s for s in summaries if _DIGEST in self._detail(s["ModelPackageArn"])["metadata"]]

    def _card(self, uri: str | None) -> dict[str, Any]:
        if not uri:
            return {}
        card = self._cards.get(uri)
        if card is None:
            store = self._adapter.store
            card = store.artifacts.get_card(uri.removeprefix(f"s3://{store.bucket}/"))
            self._cards[uri] = card  # content-addressed: never changes
        return card

    @staticmethod
    def _group_arn(package_arn: str) -> str:
        # arn:...:model-package/NAME/3 -> arn:...:model-package-group/NAME
        head, _, rest = package_arn.partition(":model-package/")
        return f"{head}:model-package-group/{rest.rsplit('/', 1)[0]}"

    def _alias_tags(self, summaries: builtins.list[dict[str, Any]]) -> dict[str, str]:
        """alias → version, from the group's ``mlshift:alias:*`` tags."""
        if not summaries:
            return {}
        arn = self._group_arn(summaries[0]["ModelPackageArn"])
        with aws_errors(f"read the aliases of model {summaries[0]['ModelPackageGroupName']!r}"):
            tags = self._sm.list_tags(ResourceArn=arn).get("Tags", [])
        return {t["Key"][len(ALIAS_TAG) :]: t["Value"] for t in tags if t["Key"].startswith(ALIAS_TAG)}

    def _version(self, summary: dict[str, Any], aliases: dict[str, str]) -> ModelVersion:
        detail = self._detail(summary["ModelPackageArn"])
        meta = detail["metadata"]
        card = self._card(meta.get(_CARD))
        names = sorted(a for a, v in aliases.items() if v == detail["version"])
        if summary.get("ModelApprovalStatus") == "Approved":
            names = sorted({*names, APPROVED})
        signature = card.get("signature")
        return ModelVersion(
            name=summary["ModelPackageGroupName"],
            version=detail["version"],
            artifact_uri=meta.get(_ARTIFACT, ""),
            digest=meta[_DIGEST],
            framework=meta.get(_FRAMEWORK, card.get("framework", "sklearn")),
            signature=Signature.model_validate(signature) if signature else None,
            metrics=card.get("metrics", {}),
            tags=card.get("tags", {}),
            aliases=tuple(names),
            description=detail["description"],
            created_at=detail["created_at"],
        )

    def _missing(self, name: str) -> NotFound:
        return NotFound(
            f"model {name!r} does not exist on {self._adapter.uri.raw}",
            provider="sagemaker",
            hint="register it first, or list models with `mlshift models list`",
        )

    def _find(self, ref: ModelRef) -> tuple[dict[str, Any], builtins.list[dict[str, Any]]]:
        """The summary ``ref`` resolves to, and every mlshift summary of the model."""
        ours = self._ours(self._summaries(ref.name))
        if not ours:
            raise self._missing(ref.name)
        if ref.alias == APPROVED:
            approved = [s for s in ours if s.get("ModelApprovalStatus") == "Approved"]
            if not approved:
                raise NotFound(f"model {ref.name!r} has no approved version", provider="sagemaker")
            return approved[-1], ours
        version = ref.version
        if ref.alias is not None:
            version = self._alias_tags(ours).get(ref.alias)
            if version is None:
                raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r}", provider="sagemaker")
        if version is None:
            return ours[-1], ours
        for summary in ours:
            if self._detail(summary["ModelPackageArn"])["version"] == version:
                return summary, ours
        raise NotFound(
            f"model {ref.name!r} has no version {version}",
            provider="sagemaker",
            hint=f"versions: {', '.join(self._detail(s['ModelPackageArn'])['version'] for s in ours)}",
        )

    def get(self, ref: ModelRef) -> ModelVersion:
        summary, ours = self._find(ref)
        return self._version(summary, self._alias_tags(ours))

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        if name is not None:
            names = [name]
        else:
            names = []
            with aws_errors("list models"):
                for page in self._sm.get_paginator("list_model_package_groups").paginate():
                    names.extend(
                        g["ModelPackageGroupName"] for g in page.get("ModelPackageGroupSummaryList", [])
                    )
        out: builtins.list[ModelVersion] = []
        for group in sorted(names):
            ours = self._ours(self._summaries(group))
            aliases = self._alias_tags(ours)
            out.extend(self._version(s, aliases) for s in ours)
        return out

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        ours = self._ours(self._summaries(name))
        matches = [s for s in ours if self._detail(s["ModelPackageArn"])["metadata"].get(_DIGEST) == digest]
        return self._version(matches[-1], self._alias_tags(ours)) if matches else None

    # ---------------------------------------------------------------- writing

    def _ensure_group(self, name: str) -> None:
        try:
            with aws_errors(f"describe model {name!r}"):
                self._sm.describe_model_package_group(ModelPackageGroupName=name)
            return
        except NotFound:
            pass
        try:
            with aws_errors(f"create model package group {name!r}"):
                self._sm.create_model_package_group(
                    ModelPackageGroupName=name,
                    ModelPackageGroupDescription=f"mlshift model {name}",
                    Tags=self._adapter.resource_tags({"mlshift:managed": "true"}),
                )
        except Conflict:
            pass  # another process created it first

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        """Upload the artifact (unless its digest is stored) and create the next package version."""
        store = self._adapter.store
        stored = store.artifacts.put(artifact)
        prefix_uri = store.uri(stored.files_prefix)
        card = {
            "digest": artifact.digest,
            "framework": spec.framework,
            "signature": spec.signature.model_dump(mode="json") if spec.signature else None,
            "metrics": spec.metrics,
            "tags": spec.tags,
        }
        card_uri = store.uri(store.artifacts.put_card(card))
        self._cards[card_uri] = card
        self._ensure_group(spec.name)
        container: dict[str, Any] = {
            "Image": self._adapter.default_image(),
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri": prefix_uri,
                    "S3DataType": "S3Prefix",
                    "CompressionType": "None",
                }
            },
            "Environment": {
                "MLSHIFT_FRAMEWORK": spec.framework,
                "MLSHIFT_MODEL_DIGEST": artifact.digest,
                "MLSHIFT_ARTIFACT": "/opt/ml/model/" + stored.entry,
            },
        }
        request: dict[str, Any] = {
            "ModelPackageGroupName": spec.name,
            "InferenceSpecification": {
                "Containers": [container],
                "SupportedContentTypes": ["application/json", "text/csv"],
                "SupportedResponseMIMETypes": ["application/json", "text/csv"],
            },
            "ModelApprovalStatus": "PendingManualApproval",
            "CustomerMetadataProperties": {
                _DIGEST: artifact.digest,
                _FRAMEWORK: spec.framework,
                _CARD: card_uri,
                _ARTIFACT: prefix_uri + stored.entry,
            },
            "Tags": self._adapter.resource_tags(spec.tags),
        }
        if spec.description:
            request["ModelPackageDescription"] = spec.description[:1024]
        if spec.metrics:
            request["ModelMetrics"] = {
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": card_uri}}
            }
        with aws_errors(f"register a version of model {spec.name!r}"):
            arn = self._sm.create_model_package(**request)["ModelPackageArn"]
        summary = {"ModelPackageArn": arn, "ModelPackageGroupName": spec.name}
        return self._version(summary, {})

    def _set_approval(self, arn: str, status: str) -> None:
        # Metadata is sent again with every approval change: moto (and older SageMaker
        # behaviour) replaces CustomerMetadataProperties with what the request carries.
        metadata = self._detail(arn)["metadata"]
        with aws_errors(f"set approval of {arn} to {status}"):
            self._sm.update_model_package(
                ModelPackageArn=arn, ModelApprovalStatus=status, CustomerMetadataProperties=metadata
            )

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        summary, ours = self._find(ModelRef(name=name, version=version))
        if alias == APPROVED:
            for other in ours:
                if other is not summary and other.get("ModelApprovalStatus") == "Approved":
                    self._set_approval(other["ModelPackageArn"], "PendingManualApproval")
            if summary.get("ModelApprovalStatus") != "Approved":
                self._set_approval(summary["ModelPackageArn"], "Approved")
        else:
            with aws_errors(f"set alias {name}@{alias}"):
                self._sm.add_tags(
                    ResourceArn=self._group_arn(summary["ModelPackageArn"]),
                    Tags=[{"Key": ALIAS_TAG + alias, "Value": version}],
                )
        return self.get(ModelRef(name=name, version=version))

    def remove_alias(self, name: str, alias: str) -> None:
        ours = self._ours(self._summaries(name))
        if not ours:
            raise self._missing(name)
        if alias == APPROVED:
            approved = [s for s in ours if s.get("ModelApprovalStatus") == "Approved"]
            if not approved:
                raise NotFound(f"model {name!r} has no approved version", provider="sagemaker")
            for summary in approved:
                self._set_approval(summary["ModelPackageArn"], "PendingManualApproval")
            return
        if alias not in self._alias_tags(ours):
            raise NotFound(f"model {name!r} has no alias {alias!r}", provider="sagemaker")
        with aws_errors(f"remove alias {name}@{alias}"):
            self._sm.delete_tags(
                ResourceArn=self._group_arn(ours[0]["ModelPackageArn"]), TagKeys=[ALIAS_TAG + alias]
            )

    def delete(self, name: str, version: str) -> None:
        """Delete one package; its S3 artifact stays (other versions may share the digest).

        Raises:
            Conflict: if an endpoint serves it.
        """
        summary, ours = self._find(ModelRef(name=name, version=version))
        users = self._adapter.endpoints.serving(f"{name}:{version}")
        if users:
            raise Conflict(
                f"model {name}:{version} is served by {', '.join(users)}",
                provider="sagemaker",
                hint="deploy another version to those endpoints (or delete them) first",
            )
        arn = summary["ModelPackageArn"]
        with aws_errors(f"delete model {name}:{version}"):
            self._sm.delete_model_package(ModelPackageName=arn)
        stale = [ALIAS_TAG + a for a, v in self._alias_tags(ours).items() if v == version]
        if stale:
            with aws_errors(f"remove the aliases of {name}:{version}"):
                self._sm.delete_tags(ResourceArn=self._group_arn(arn), TagKeys=stale)
        self._details.pop(arn, None)

    def artifact_path(self, version: ModelVersion) -> Path:
        return self._adapter.store.artifacts.fetch(version.digest, self._adapter.cache_dir)
