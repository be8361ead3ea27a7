"""The model registry on Vertex AI Model Registry: one model per name, a model version per version.

- A name's first version is uploaded with ``model_id=NAME``; later ones with ``parent_model``,
  so every version lives under one model. Vertex assigns each version's ``version_id``
  (1, 2, 3, ... per model, atomically, never reused), and that is the mlshift version.
- The artifact lives in the staging bucket under its digest (core's
  :class:`mlshift.storage.ArtifactStore`); the version's ``artifact_uri`` points at its folder,
  so Vertex copies it into the container (``AIP_STORAGE_URI``). Bytes already stored are never
  uploaded again.
- Digest, framework and the version card's key are labels (``mlshift-*``; a 64-digit digest is
  two labels, since label values hold 63 characters). The card (signature, metrics, tags) is a
  JSON object in the bucket.
- Aliases are Vertex's own ``version_aliases`` (moved with ``MergeVersionAliases``), so the
  console and ``models/NAME@champion`` see them; ``default`` is Vertex's and always held by one
  version.
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
from mlshift_vertex._naming import LABEL_MANAGED, check_alias, join_hex, split_hex
from mlshift_vertex.errors import PROVIDER, google_errors

if TYPE_CHECKING:
    from mlshift_vertex._adapter import VertexAdapter

__all__ = ["DEFAULT_ALIAS", "VertexModelRegistry"]

#: Vertex's own alias: held by exactly one version of every model.
DEFAULT_ALIAS = "default"
_DIGEST, _DIGEST2, _CARD, _CARD2, _FRAMEWORK = (
    "mlshift-digest",
    "mlshift-digest2",
    "mlshift-card",
    "mlshift-card2",
    "mlshift-framework",
)


class VertexModelRegistry:
    """``ModelRegistry`` on Vertex AI Model Registry."""

    def __init__(self, adapter: VertexAdapter) -> None:
        self._adapter = adapter
        self._cards: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def _client(self) -> Any:
        return self._adapter.clients.client("model")

    def model_name(self, name: str) -> str:
        """``projects/P/locations/L/models/NAME``."""
        return f"{self._adapter.parent}/models/{name}"

    # ---------------------------------------------------------------- reading

    def versions(self, name: str) -> builtins.list[Any]:
        """The model's mlshift versions (Vertex ``Model`` messages), oldest first; [] if none."""
        try:
            with google_errors(f"list the versions of model {name!r}"):
                found = builtins.list(self._client.list_model_versions(name=self.model_name(name)))
        except NotFound:
            return []
        ours = [m for m in found if m.labels.get(LABEL_MANAGED) == "true" and m.labels.get(_DIGEST)]
        return sorted(ours, key=lambda m: int(m.version_id) if m.version_id.isdigit() else 0)

    def _card(self, labels: Any) -> dict[str, Any]:
        hexdigest = join_hex(labels.get(_CARD), labels.get(_CARD2))
        if hexdigest is None:
            return {}
        key = self._adapter.store.key("cards", f"{hexdigest}.json")
        card = self._cards.get(key)
        if card is None:
            card = self._adapter.store.artifacts.get_card(key)
            with self._lock:
                self._cards[key] = card  # content-addressed: never changes
        return card

    def version(self, model: Any) -> ModelVersion:
        """A Vertex model version as a :class:`ModelVersion`."""
        labels = model.labels
        card = self._card(labels)
        signature = card.get("signature")
        created = model.version_create_time or model.create_time
        return ModelVersion(
            name=model.name.rsplit("/", 1)[-1].partition("@")[0],
            version=model.version_id,
            artifact_uri=model.artifact_uri,
            digest="sha256:" + (join_hex(labels.get(_DIGEST), labels.get(_DIGEST2)) or ""),
            framework=labels.get(_FRAMEWORK, card.get("framework", "sklearn")),
            signature=Signature.model_validate(signature) if signature else None,
            metrics=card.get("metrics", {}),
            tags=card.get("tags", {}),
            aliases=tuple(sorted(model.version_aliases)),
            description=model.version_description or None,
            created_at=created if isinstance(created, datetime) else datetime.now(timezone.utc),
        )

    def _missing(self, name: str) -> NotFound:
        return NotFound(
            f"model {name!r} does not exist on {self._adapter.uri.raw}",
            provider=PROVIDER,
            hint="register it first, or list models with `mlshift models list`",
        )

    def _find(self, ref: ModelRef) -> tuple[Any, builtins.list[Any]]:
        """The Vertex model version ``ref`` resolves to, and every mlshift version of the model."""
        ours = self.versions(ref.name)
        if not ours:
            raise self._missing(ref.name)
        if ref.alias is not None:
            for model in ours:
                if ref.alias in model.version_aliases:
                    return model, ours
            raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r}", provider=PROVIDER)
        if ref.version is None:
            return ours[-1], ours
        for model in ours:
            if model.version_id == ref.version:
                return model, ours
        raise NotFound(
            f"model {ref.name!r} has no version {ref.version}",
            provider=PROVIDER,
            hint=f"versions: {', '.join(m.version_id for m in ours)}",
        )

    def get(self, ref: ModelRef) -> ModelVersion:
        model, _ = self._find(ref)
        return self.version(model)

    def resource(self, ref: ModelRef) -> str:
        """``projects/P/locations/L/models/NAME@VERSION`` of the version ``ref`` resolves to."""
        model, _ = self._find(ref)
        return f"{self.model_name(ref.name)}@{model.version_id}"

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        if name is not None:
            names = [name]
        else:
            with google_errors("list models"):
                found = self._client.list_models(
                    request=self._adapter.clients.types().ListModelsRequest(
                        parent=self._adapter.parent, filter=f'labels.{LABEL_MANAGED}="true"'
                    )
                )
                names = sorted({m.name.rsplit("/", 1)[-1].partition("@")[0] for m in found})
        out: builtins.list[ModelVersion] = []
        for each in names:
            out.extend(self.version(m) for m in self.versions(each))
        return out

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        first, second = split_hex(digest.partition(":")[2])
        matches = [
            m
            for m in self.versions(name)
            if (m.labels.get(_DIGEST), m.labels.get(_DIGEST2)) == (first, second)
        ]
        return self.version(matches[-1]) if matches else None

    # ---------------------------------------------------------------- writing

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        """Store the artifact (unless its digest is stored) and upload the next model version."""
        adapter = self._adapter
        store = adapter.store
        stored = store.artifacts.put(artifact)
        card = {
            "digest": artifact.digest,
            "framework": spec.framework,
            "signature": spec.signature.model_dump(mode="json") if spec.signature else None,
            "metrics": spec.metrics,
            "tags": spec.tags,
        }
        card_key = store.artifacts.put_card(card)
        self._cards[card_key] = card
        card_hex = card_key.rsplit("/", 1)[-1].removesuffix(".json")
        digest_hex = artifact.digest.partition(":")[2]
        labels = {
            **adapter.options.labels,
            LABEL_MANAGED: "true",
            _FRAMEWORK: spec.framework,
            _DIGEST: split_hex(digest_hex)[0],
            _DIGEST2: split_hex(digest_hex)[1],
            _CARD: split_hex(card_hex)[0],
            _CARD2: split_hex(card_hex)[1],
        }
        types = adapter.clients.types()
        model = types.Model(
            display_name=spec.name,
            artifact_uri=store.uri(stored.files_prefix),
            container_spec=types.ModelContainerSpec(
                image_uri=adapter.image_uri(),
                env=[
                    types.EnvVar(name="MLSHIFT_FRAMEWORK", value=spec.framework),
                    types.EnvVar(name="MLSHIFT_MODEL_DIGEST", value=artifact.digest),
                    types.EnvVar(name="MLSHIFT_ARTIFACT", value=stored.entry),
                ],
                ports=[types.Port(container_port=8080)],
                predict_route="/predict",
                health_route="/health",
            ),
            labels=labels,
            version_description=(spec.description or "")[:4096],
        )
        if adapter.options.encryption_key:
            model.encryption_spec = types.EncryptionSpec(kms_key_name=adapter.options.encryption_key)
        existing = self.versions(spec.name) or self._exists(spec.name)
        request = types.UploadModelRequest(parent=adapter.parent, model=model)
        if existing:
            request.parent_model = self.model_name(spec.name)
        else:
            request.model_id = spec.name
        try:
            response = self._upload(request, spec.name)
        except Conflict:
            # Another process uploaded the first version at the same time: be its next version.
            request = types.UploadModelRequest(
                parent=adapter.parent, model=model, parent_model=self.model_name(spec.name)
            )
            response = self._upload(request, spec.name)
        with google_errors(f"read the new version of model {spec.name!r}"):
            created = self._client.get_model(name=f"{self.model_name(spec.name)}@{response.model_version_id}")
        return self.version(created)

    def _exists(self, name: str) -> bool:
        try:
            with google_errors(f"read model {name!r}"):
                self._client.get_model(name=self.model_name(name))
        except NotFound:
            return False
        return True

    def _upload(self, request: Any, name: str) -> Any:
        with google_errors(f"upload a version of model {name!r}"):
            operation = self._client.upload_model(request=request)
        return self._adapter.wait(operation, f"upload a version of model {name!r}")

    def _merge(self, name: str, version: str, aliases: builtins.list[str]) -> None:
        with google_errors(f"change the aliases of {name}:{version}"):
            self._client.merge_version_aliases(
                name=f"{self.model_name(name)}@{version}", version_aliases=aliases
            )

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        """Point ``alias`` at ``version``: remove it from the version holding it, then add it."""
        check_alias(alias, self._adapter.uri.raw)
        model, ours = self._find(ModelRef(name=name, version=version))
        if alias not in model.version_aliases:
            if alias != DEFAULT_ALIAS:  # Vertex moves ``default`` itself
                for other in ours:
                    if other is not model and alias in other.version_aliases:
                        self._merge(name, other.version_id, [f"-{alias}"])
            self._merge(name, version, [alias])
        return self.get(ModelRef(name=name, version=version))

    def remove_alias(self, name: str, alias: str) -> None:
        if alias == DEFAULT_ALIAS:
            raise Conflict(
                f"the alias {DEFAULT_ALIAS!r} of model {name!r} cannot be removed: Vertex AI keeps it on one "
                "version",
                provider=PROVIDER,
                hint=f"move it instead: mlshift models alias {name} {DEFAULT_ALIAS} VERSION",
            )
        ours = self.versions(name)
        if not ours:
            raise self._missing(name)
        holders = [m for m in ours if alias in m.version_aliases]
        if not holders:
            raise NotFound(f"model {name!r} has no alias {alias!r}", provider=PROVIDER)
        for model in holders:
            self._merge(name, model.version_id, [f"-{alias}"])

    def delete(self, name: str, version: str) -> None:
        """Delete one version; its artifact stays in the bucket (others may share the digest).

        Vertex refuses to delete the version holding ``default`` while others exist, so
        ``default`` first moves to the newest other version; the last version deletes the model.

        Raises:
            Conflict: if an endpoint serves it.
        """
        model, ours = self._find(ModelRef(name=name, version=version))
        users = self._adapter.endpoints.serving(f"{name}:{version}")
        if users:
            raise Conflict(
                f"model {name}:{version} is served by {', '.join(users)}",
                provider=PROVIDER,
                hint="deploy another version to those endpoints (or delete them) first",
            )
        others = [m for m in ours if m is not model]
        with google_errors(f"delete model {name}:{version}"):
            if not others and len(self._all_versions(name)) <= 1:
                operation = self._client.delete_model(name=self.model_name(name))
            else:
                if DEFAULT_ALIAS in model.version_aliases:
                    self._merge(name, (others or ours)[-1].version_id, [DEFAULT_ALIAS])
                operation = self._client.delete_model_version(name=f"{self.model_name(name)}@{version}")
        self._adapter.wait(operation, f"delete model {name}:{version}")

    def _all_versions(self, name: str) -> builtins.list[Any]:
        with google_errors(f"list the versions of model {name!r}"):
            return builtins.list(self._client.list_model_versions(name=self.model_name(name)))

    def artifact_path(self, version: ModelVersion) -> Path:
        return self._adapter.store.artifacts.fetch(version.digest, self._adapter.cache_dir)
