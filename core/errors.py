"""Errors a user can fix. The CLI prints their message and exits with status 2, no traceback."""


class UserError(Exception):
    """Bad input or configuration; the message names the problem and what to do about it."""


class DataError(UserError):
    """A labelled data file or dataset cannot be used as it is."""


class BoundError(UserError):
    """An exported variant missed its parity or accuracy bound; carries the manifest with the figures,
    as manifest.json's JSON object (``engine.bundle.Manifest.to_dict()``: this module sits below the
    engine and cannot name its types)."""

    def __init__(self, message: str, manifest: dict | None = None) -> None:
        super().__init__(message)
        self.manifest = manifest
