"""The one exception type users see: its message is a single line naming the file/key and the problem."""


class TransferlabError(Exception):
    """Bad input or configuration; the CLI and flows print it as one line and exit non-zero."""


class ConfigError(TransferlabError):
    pass


class DataError(TransferlabError):
    pass
