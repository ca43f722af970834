"""Release registry: immutable release manifests, mutable status records, and the champion pointer."""

from .registry import CHAMPION_KEY, Registry
from .release import STATUSES, TRANSITIONS, ManifestFields, Release, check_transition

__all__ = ["CHAMPION_KEY", "STATUSES", "TRANSITIONS", "ManifestFields", "Registry", "Release", "check_transition"]
