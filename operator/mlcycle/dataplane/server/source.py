"""Where a model comes from: a registry reference, a run, an artifact URI or a local path.

Aliases are resolved to a version before anything is downloaded, so the version in the
metrics labels is the version that was loaded even if the alias moves meanwhile.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

_REGISTRY_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")
_REGISTRY_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")


@dataclass(frozen=True)
class ModelIdentity:
    """The name and version the server answers to and labels its metrics with."""

    name: str
    version: str
    resolved: bool = True
    """False while an alias's version is not yet known: nothing is labelled with it then."""

    def refuses(self, name: str, version: str) -> str | None:
        """Why a request naming this model (and version, if any) is not for this server."""
        if name == self.name and (not version or version == self.version):
            return None
        served = self.name + (f" version {self.version}" if self.version else "")
        missing = name + (f" version {version}" if version else "")
        return f"model {missing} not found; this server serves {served}"


@dataclass(frozen=True)
class ModelSource:
    uri: str
    """What to download: registry aliases already resolved to `models:/name/version`."""
    identity: ModelIdentity


def _name_from_uri(uri: str) -> str:
    if match := _REGISTRY_VERSION.match(uri) or _REGISTRY_ALIAS.match(uri):
        return match["name"]
    return Path(uri.rstrip("/").split(":", 1)[-1]).name or "model"


def provisional_identity(
    uri: str, name_override: str | None = None, version_override: str | None = None
) -> ModelIdentity:
    """What is known before asking the registry (an alias's version is not)."""
    match = _REGISTRY_VERSION.match(uri)
    version = match["version"] if match else ""
    return ModelIdentity(
        name=name_override or _name_from_uri(uri),
        version=version_override or version,
        resolved=bool(version_override) or not _REGISTRY_ALIAS.match(uri),
    )


def resolve_source(
    uri: str, name_override: str | None = None, version_override: str | None = None
) -> ModelSource:
    """The concrete URI and identity; asks the registry (MLFLOW_TRACKING_URI) for aliases."""
    identity = provisional_identity(uri, name_override, version_override)
    if match := _REGISTRY_ALIAS.match(uri):
        from mlflow.tracking import MlflowClient

        name = match["name"]
        version = str(MlflowClient().get_model_version_by_alias(name, match["alias"]).version)
        return ModelSource(
            uri=f"models:/{name}/{version}",
            identity=ModelIdentity(identity.name, version_override or version, resolved=True),
        )
    return ModelSource(uri=uri, identity=identity)


def local_model_dir(source: ModelSource, download_root: Path | None = None) -> Path:
    """A local directory holding the MLmodel file: the path itself, or a fresh download."""
    if os.path.isdir(source.uri):
        return Path(source.uri)
    if source.uri.startswith("file://") and os.path.isdir(source.uri.removeprefix("file://")):
        return Path(source.uri.removeprefix("file://"))
    import mlflow.artifacts

    destination = tempfile.mkdtemp(prefix="mlcycle-model-", dir=download_root)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source.uri, dst_path=destination))
