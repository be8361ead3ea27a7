"""The model registry on Azure ML: workspace models, ``name:version``.

- Versions are strings the caller picks on Azure; mlshift counts them up per name (``1``, ``2``,
  ...), counting archived versions too, and retries with the next number when another process
  took one first (Azure refuses to change an existing version's asset).
- The artifact lives in the workspace datastore under its digest (core's
  :class:`mlshift.storage.ArtifactStore` on the blob container, see :mod:`mlshift_azureml._store`),
  so an unchanged artifact is never uploaded again; the model's ``path`` points at it.
- Digest, framework and the card's location are tags (``mlshift:digest``, ...); the card
  (signature, metrics, tags) is a content-addressed JSON blob.
- Aliases: Azure has only ``latest``. An alias is a tag ``mlshift:alias:NAME = SEQUENCE`` on the
  version it names. Moving it tags the new version with a higher sequence *before* untagging the
  old one, and readers take the highest sequence: at every moment exactly one version holds it.
- Deleting a version archives it (Azure does not delete model versions); archived versions are
  no longer listed or resolved.
"""

from __future__ import annotations

import builtins
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.adapter import Artifact
from mlshift.errors import Conflict, NotFound
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion, Signature
from mlshift_azureml.errors import PROVIDER, azure_errors

if TYPE_CHECKING:
    from mlshift_azureml._adapter import AzureMLAdapter

__all__ = ["ALIAS_TAG", "AzureMLModelRegistry"]

ALIAS_TAG = "mlshift:alias:"
DIGEST, FRAMEWORK, CARD, ENTRY = "mlshift:digest", "mlshift:framework", "mlshift:card", "mlshift:entry"
_ATTEMPTS = 5


def _order(model: Any) -> tuple[int, str]:
    version = str(model.version)
    return (int(version), "") if version.isdigit() else (1 << 62, version)


class AzureMLModelRegistry:
    """``ModelRegistry`` on workspace models."""

    def __init__(self, adapter: AzureMLAdapter) -> None:
        self._adapter = adapter
        self._cards: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def _ml(self) -> Any:
        return self._adapter.clients.ml()

    # ---------------------------------------------------------------- reading

    def _versions(self, name: str, *, archived: bool = False) -> builtins.list[Any]:
        """mlshift's versions of ``name`` (active ones; all with ``archived``), oldest first."""
        from azure.ai.ml.constants import ListViewType

        view = ListViewType.ALL if archived else ListViewType.ACTIVE_ONLY
        try:
            with azure_errors(f"list versions of model {name!r}"):
                found = list(self._ml.models.list(name=name, list_view_type=view))
        except NotFound:
            return []
        return sorted((m for m in found if DIGEST in (m.tags or {})), key=_order)

    def _card(self, key: str | None) -> dict[str, Any]:
        if not key:
            return {}
        card = self._cards.get(key)
        if card is None:
            card = self._adapter.store.artifacts.get_card(key)
            with self._lock:
                self._cards[key] = card  # content-addressed: never changes
        return card

    @staticmethod
    def _aliases(models: builtins.list[Any]) -> dict[str, str]:
        """alias → version: of the versions tagged with an alias, the one with the highest sequence."""
        best: dict[str, tuple[int, str]] = {}
        for model in models:
            for key, value in (model.tags or {}).items():
                if key.startswith(ALIAS_TAG):
                    alias = key[len(ALIAS_TAG) :]
                    rank = (int(value) if str(value).isdigit() else 0, str(model.version))
                    if alias not in best or rank > best[alias]:
                        best[alias] = rank
        return {alias: version for alias, (_, version) in best.items()}

    def _version(self, model: Any, aliases: dict[str, str]) -> ModelVersion:
        tags = dict(model.tags or {})
        card = self._card(tags.get(CARD))
        signature = card.get("signature")
        created = getattr(getattr(model, "creation_context", None), "created_at", None)
        version = str(model.version)
        return ModelVersion(
            name=model.name,
            version=version,
            artifact_uri=str(model.path or ""),
            digest=tags[DIGEST],
            framework=tags.get(FRAMEWORK, card.get("framework", "sklearn")),
            signature=Signature.model_validate(signature) if signature else None,
            metrics=card.get("metrics", {}),
            tags=card.get("tags", {}),
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
            description=model.description or None,
            created_at=created if isinstance(created, datetime) else datetime.now(timezone.utc),
        )

    def _missing(self, name: str) -> NotFound:
        return NotFound(
            f"model {name!r} does not exist in workspace {self._adapter.workspace.name!r}",
            provider=PROVIDER,
            hint="register it first, or list models with `mlshift models list`",
        )

    def _find(self, ref: ModelRef) -> tuple[Any, builtins.list[Any]]:
        """The version ``ref`` resolves to, and every active mlshift version of the model."""
        models = self._versions(ref.name)
        if not models:
            raise self._missing(ref.name)
        version = ref.version
        if ref.alias is not None:
            version = self._aliases(models).get(ref.alias)
            if version is None:
                raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r}", provider=PROVIDER)
        if version is None:
            return models[-1], models
        for model in models:
            if str(model.version) == version:
                return model, models
        raise NotFound(
            f"model {ref.name!r} has no version {version}",
            provider=PROVIDER,
            hint=f"versions: {', '.join(str(m.version) for m in models)}",
        )

    def get(self, ref: ModelRef) -> ModelVersion:
        model, models = self._find(ref)
        return self._version(model, self._aliases(models))

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        if name is not None:
            names = [name]
        else:
            with azure_errors("list models"):
                names = sorted({str(m.name) for m in self._ml.models.list()})
        out: builtins.list[ModelVersion] = []
        for model_name in names:
            models = self._versions(model_name)
            aliases = self._aliases(models)
            out.extend(self._version(m, aliases) for m in models)
        return out

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        models = self._versions(name)
        matches = [m for m in models if (m.tags or {}).get(DIGEST) == digest]
        return self._version(matches[-1], self._aliases(models)) if matches else None

    # ---------------------------------------------------------------- writing

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        """Upload the artifact (unless its digest is stored) and create the next version."""
        from azure.ai.ml.entities import Model

        store = self._adapter.store
        stored = store.artifacts.put(artifact)
        card = {
            "digest": artifact.digest,
            "framework": spec.framework,
            "signature": spec.signature.model_dump(mode="json") if spec.signature else None,
            "metrics": spec.metrics,
            "tags": spec.tags,
        }
        card_key = store.artifacts.put_card(card)
        with self._lock:
            self._cards[card_key] = card
        # User tags first, so that none can overwrite mlshift's own.
        tags = {
            **self._adapter.resource_tags(spec.tags),
            DIGEST: artifact.digest,
            FRAMEWORK: spec.framework,
            CARD: card_key,
            ENTRY: stored.entry,
        }
        taken = [int(m.version) for m in self._versions(spec.name, archived=True) if str(m.version).isdigit()]
        number = max(taken, default=0) + 1
        for _ in range(_ATTEMPTS):
            model = Model(
                name=spec.name,
                version=str(number),
                path=store.uri(stored.files_prefix),
                type="custom_model",
                description=(spec.description or "")[:5000] or None,
                tags=tags,
            )
            try:
                with azure_errors(f"register version {number} of model {spec.name!r}"):
                    created = self._ml.models.create_or_update(model)
            except Conflict:
                number += 1  # another process registered this number first
                continue
            return self._version(created, {})
        raise Conflict(
            f"could not register model {spec.name!r}: versions {number - _ATTEMPTS + 1}-{number} were taken "
            "while trying",
            provider=PROVIDER,
            hint="other processes are registering the same model: try again",
        )

    def _retag(self, model: Any, tags: dict[str, str]) -> None:
        model.tags = tags
        with azure_errors(f"tag model {model.name}:{model.version}"):
            self._ml.models.create_or_update(model)

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        target, models = self._find(ModelRef(name=name, version=version))
        key = ALIAS_TAG + alias
        holders = [m for m in models if key in (m.tags or {})]
        if holders != [target]:
            sequences = [int(v) for m in holders if str(v := m.tags[key]).isdigit()]
            sequence = max([time.time_ns(), *(s + 1 for s in sequences)])
            # Tag the new holder first: from here on readers resolve to it (highest sequence),
            # before this point to the old one; never to none, never to two.
            self._retag(target, {**(target.tags or {}), key: str(sequence)})
            for old in holders:
                if old is not target:
                    self._retag(old, {k: v for k, v in (old.tags or {}).items() if k != key})
        return self.get(ModelRef(name=name, version=version))

    def remove_alias(self, name: str, alias: str) -> None:
        models = self._versions(name)
        if not models:
            raise self._missing(name)
        key = ALIAS_TAG + alias
        holders = [m for m in models if key in (m.tags or {})]
        if not holders:
            raise NotFound(f"model {name!r} has no alias {alias!r}", provider=PROVIDER)
        for model in holders:
            self._retag(model, {k: v for k, v in (model.tags or {}).items() if k != key})

    def delete(self, name: str, version: str) -> None:
        """Archive one version (Azure keeps model versions); its datastore artifact stays.

        Raises:
            Conflict: if an endpoint serves it.
        """
        self._find(ModelRef(name=name, version=version))
        users = self._adapter.endpoints.serving(f"{name}:{version}")
        if users:
            raise Conflict(
                f"model {name}:{version} is served by {', '.join(users)}",
                provider=PROVIDER,
                hint="deploy another version to those endpoints (or delete them) first",
            )
        with azure_errors(f"archive model {name}:{version}"):
            self._ml.models.archive(name=name, version=version)

    def artifact_path(self, version: ModelVersion) -> Path:
        return self._adapter.store.artifacts.fetch(version.digest, self._adapter.cache_dir)
