"""The fixed vocabulary of condition types and Event reasons (CamelCase, as kubectl shows them)."""

from typing import Final

# Condition types
ACCEPTED: Final = "Accepted"
READY: Final = "Ready"

# Reasons
SPEC_VALID: Final = "SpecValid"
INVALID_SPEC: Final = "InvalidSpec"
