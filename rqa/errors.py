"""Errors that are the user's to fix: the CLI prints them as one line, the app and the API as a
message. A leaf module: every rqa module may import it, it imports nothing."""


class UserError(Exception):
    """Something the user can fix; the message says what, in one line, without server paths
    where a remote user reads it. Errors about a value given (a setting, a question, a request, an
    upload, a rating) are ValueErrors too."""


class SettingsError(UserError, ValueError):
    """A setting with a value rqa cannot work with; the message names it and its range."""


class ModelError(UserError):
    """A model or adapter file that is missing, changed, corrupt, or cannot be loaded."""


class ServerError(ModelError):
    """llama-server could not be started (the app then generates in-process)."""


class IndexError_(UserError):
    """An index that cannot be used; the message says why and what to do."""


class IngestError(UserError):
    """A file that cannot be turned into a document; the message says why."""


class StoreError(UserError, ValueError):
    """An upload refused, or the papers store or the index cannot be written."""


class QuestionError(UserError, ValueError):
    """A question that cannot be asked as it is (empty, too long); `code` is OpenAI's error code
    for the API where one fits."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class RequestError(UserError, ValueError):
    """An API request rqa cannot answer as sent (bad body, unsupported parameter); `param` is the
    request field at fault, as OpenAI's errors name it."""

    def __init__(self, message: str, param: str | None = "messages"):
        super().__init__(message)
        self.param = param


class RatingError(UserError, ValueError):
    """A rating or ratings file that cannot be stored."""


class Cancelled(Exception):
    """The asker has gone (an API client disconnected) while its question waited for the model: it
    leaves the queue instead of being answered for no one. Not a UserError: no one reads it."""


# FileNotFoundError: a path the user named (papers, a queries file) is not there.
USER_ERRORS = (UserError, FileNotFoundError)
