"""The one exception type users see: its message is a single line naming the file/key and the problem."""


class TransferlabError(Exception):
    """Bad input or configuration; the CLI and flows print it as one line and exit non-zero."""


class ConfigError(TransferlabError):
    pass


class DataError(TransferlabError):
    pass


class Interrupted(Exception):
    """A fit stopped because the user interrupted the process (transferlab.interrupt)."""

    def __init__(self, message: str = "interrupted: the fit stopped at its last checkpoint") -> None:
        super().__init__(message)


# failures the entry point says in one line: neither retried nor recorded as crashes, their
# Prefect log lines dropped
EXPECTED = (TransferlabError, Interrupted)


def first_line(exc: BaseException) -> str:
    """A library's exception cut to its first non-blank line (its type name if it says nothing):
    libraries' messages span lines, ours must not."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
