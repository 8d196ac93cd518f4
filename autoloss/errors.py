"""User-facing errors: one clear line, exit code 2, no traceback (the CLI catches AutolossError)."""


class AutolossError(Exception):
    """An error the user can fix: bad input, a missing file, a wrong option. The message names the file or
    case and what to do."""

    exit_code = 2
