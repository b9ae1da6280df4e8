"""The one exception type a user should ever see: the CLI prints it as one line and exits 2."""


class EverloopError(Exception):
    """Bad input or an unrecoverable state; the message names the file or flag at fault."""
