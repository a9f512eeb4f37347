"""A digest of a child's manifest, so a child unchanged since it was applied is not sent
again every tick."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """Identifies what was applied: equal manifests, whatever their key order, give one digest."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
