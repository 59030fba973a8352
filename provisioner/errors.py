"""The one error type the CLI turns into a clear line and a non-zero exit."""


class DeelitError(Exception):
    """A user-facing failure: the message names the file, key, device or step and what to do."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
