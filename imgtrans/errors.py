"""The one exception type whose message is shown to users as-is, and how any error becomes one line."""


class ImgtransError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


def one_line(exc: BaseException) -> str:
    """The user-facing message; errors raised in loader workers arrive wrapped in a traceback."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    prefix = "imgtrans.errors.ImgtransError: "
    if last.startswith(prefix):
        return last[len(prefix):]
    return last if len(lines) > 1 and isinstance(exc, ImgtransError) else lines[0]
