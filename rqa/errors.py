"""Errors that are the user's to fix: the CLI prints them as one line, the app as a message."""

from rqa.index import IndexError_
from rqa.ingest import IngestError


class ModelError(Exception):
    """A model file that is missing, corrupt, or cannot be loaded."""


USER_ERRORS = (IndexError_, IngestError, ModelError, FileNotFoundError, ValueError)

