"""Which registry version is this ModelVersion's, and how far its registration got."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol

# A version PENDING_REGISTRATION is usually READY within a second or two.
REGISTERING_POLL_SECONDS: Final = 2.0


class RegistryVersion(Protocol):
    """A model version as the registry reports it."""

    @property
    def version(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def status_message(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def model_id(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def creation_ms(self) -> int: ...
    @property
    def tags(self) -> dict[str, str]: ...


def keep_oldest(
    versions: Sequence[RegistryVersion],
) -> tuple[RegistryVersion | None, list[RegistryVersion]]:
    """The version this object keeps among those tagged with its uid, and the extras.

    More than one exists only after two creators raced; every reconcile picks the same one
    (oldest, then lowest number) so the extras are removed, never the keeper.
    """
    if not versions:
        return None, []
    ordered = sorted(versions, key=lambda found: (found.creation_ms, int(found.version)))
    return ordered[0], ordered[1:]


def model_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


Registration = Literal["Registering", "Ready", "Failed"]


def registration_state(version: RegistryVersion) -> Registration:
    if version.status == "READY":
        return "Ready"
    if version.status == "FAILED_REGISTRATION":
        return "Failed"
    return "Registering"
