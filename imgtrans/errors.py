"""The one exception type whose message is shown to users as-is."""


class ImgtransError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""
