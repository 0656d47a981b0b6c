"""Typed registry errors. ``str(err)`` is a message for the user: what was wrong and how to fix it."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class. The message is safe to show to users as-is."""


class InvalidNameError(RegistryError):
    """A style name (or tag) is not a valid slug, or is reserved."""


class NameTakenError(RegistryError):
    """Another style already has this name (names are first come, first served)."""


class StyleNotFoundError(RegistryError):
    """No visible style has this name. ``suggestions`` holds the closest existing names."""

    def __init__(self, message: str, *, suggestions: list[str] | None = None) -> None:
        self.suggestions = list(suggestions or [])
        if self.suggestions:
            message += " Did you mean " + ", ".join(f"`{name}`" for name in self.suggestions) + "?"
        super().__init__(message)


class RevisionNotFoundError(RegistryError):
    """The style exists but has no such revision."""


class InvalidReferenceError(RegistryError):
    """A reference is not of the form ``name``, ``name@3`` or ``name@latest``."""


class PermissionDeniedError(RegistryError):
    """The asking user may not see or change this style."""


class LimitExceededError(RegistryError):
    """A description, tag list or page size is over its limit."""


class InvalidCodeError(RegistryError):
    """A stylecode could not be parsed (wraps `stylecodes.codec.CodeError`)."""


class InvalidCursorError(RegistryError):
    """A browse cursor was damaged, hand-made, or belongs to another sort."""


class InvalidSortError(RegistryError):
    """`browse` was asked for a sort order that does not exist."""


class InvalidFilterError(RegistryError):
    """A browse filter (author id, encoder version) is of the wrong type or out of range."""


class InvalidTextError(RegistryError):
    """A description, note or search query is not text."""


class InvalidSettingError(RegistryError):
    """A guild setting is out of range."""


class UsageNotFoundError(RegistryError):
    """No usage row has this job id."""


class InvalidUsageError(RegistryError):
    """A generation request field (seed, steps, size, prompt, ...) is of the wrong type or out of range."""


class InvalidJobIdError(InvalidUsageError):
    """A job id is not a uuid4 hex string."""


class DuplicateJobError(RegistryError):
    """A usage row with this job id was already recorded."""


class InvalidStatusError(RegistryError):
    """An unknown usage status, or a transition the job lifecycle does not allow."""


class InvalidVisibilityError(RegistryError):
    """Visibility is not public/guild/private, or `guild` was asked for outside a guild."""


class InvalidPreviewError(RegistryError):
    """A preview image is not WebP or is too large."""


class MissingExtensionError(RegistryError):
    """The PostgreSQL server lacks an extension the registry needs (pgvector, pg_trgm), or this database
    user may not create it. The message says which one and how to install or enable it."""
