"""Why an export or an import was refused (one line each, naming the reason and the path)."""

from __future__ import annotations

from mirror.errors import MirrorError


class BundleError(MirrorError):
    """An export that cannot be made, or a bundle that is refused: nothing is applied."""


class UsageError(BundleError):
    """Options or configuration that do not fit (exit 2)."""


class AlreadyApplied(BundleError):
    """The bundle (or a later one of the same source) is applied already: a no-op."""
