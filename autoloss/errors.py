"""User-facing errors: one clear line, exit code 2, no traceback (the CLI catches AutolossError)."""


class AutolossError(Exception):
    """An error the user can fix: bad input, a missing file, a wrong option. The message names the file or
    case and what to do."""

    exit_code = 2


def check_writable(folder, what: str) -> None:
    """Make ``folder`` if missing and make sure files can be created in it; else one line naming it (a read-only
    folder, a missing parent that cannot be made, a full disk), before any work is done."""
    import os
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".autoloss-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise AutolossError(f"{folder}: cannot write {what} there ({exc.strerror or exc}); make it writable or "
                            "choose another folder") from None
