"""The one exception type whose message is shown to users as-is, and how any error becomes one line."""

import errno
import re

# What an OSError means, and what to do about it, by its errno.
OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space or choose a folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose a folder on another disk"),
    errno.EROFS: ("read-only file system", "choose a folder you can write to"),
    errno.EACCES: ("permission denied", "check its permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "check its permissions or choose another path"),
    errno.EISDIR: ("is a folder where a file was expected", "give a file"),
    errno.ENOTDIR: ("part of the path is a file where a folder was expected", "choose another path"),
    errno.EEXIST: ("exists already", "remove it or choose another path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}


class ImgtransError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


def without_password(url: str) -> str:
    """A database URL as it may be shown: `scheme://user:***@host…`, `password=***` (also when it is too broken
    to parse: up to the last @, as a password may hold / and @)."""
    url = re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def os_error_message(exc: OSError) -> str:
    """`what happened: which path; what to do` for an operating-system error (a full disk, a read-only folder,
    a file where a folder should be …)."""
    what, advice = OS_ERRORS.get(exc.errno, (exc.strerror or type(exc).__name__, "check the path"))
    paths = " → ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{what}: {paths}; {advice}" if paths else f"{what}; {advice}"


def one_line(exc: BaseException) -> str:
    """The user-facing message; errors raised in loader workers arrive wrapped in a traceback."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_error_message(exc)
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    prefix = "imgtrans.errors.ImgtransError: "
    if last.startswith(prefix):
        return last[len(prefix):]
    return last if len(lines) > 1 and isinstance(exc, ImgtransError) else lines[0]


# pydantic's error types in the words of our other one-line errors
EXPECTED = {"dict_type": "expected a mapping", "model_type": "expected a mapping", "list_type": "expected a list",
            "int_type": "expected an integer", "int_from_float": "expected an integer",
            "float_type": "expected a number",
            "string_type": "expected text", "bool_type": "expected true or false", "missing": "required"}
BOUND_WORDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
               "less_than": ("lt", "<")}


def validation_message(exc) -> str:
    """A pydantic `ValidationError` as one line: where the first bad value is (`a.b[0].c`), what is wrong."""
    first = exc.errors()[0]
    loc, kind = list(first["loc"]), first["type"]
    if kind == "extra_forbidden":
        message, loc = f"unknown key '{loc[-1]}'", loc[:-1]
    elif kind in EXPECTED:
        message = EXPECTED[kind]
    elif kind in BOUND_WORDS:
        key, word = BOUND_WORDS[kind]
        message = f"must be {word} {first['ctx'][key]}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        message = message[0].lower() + message[1:]
    if kind not in ("value_error", "missing", "extra_forbidden") and not isinstance(first.get("input"), (dict, list)):
        message += f", got {first.get('input')!r}"
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return f"{where}: {message}" if where else message
