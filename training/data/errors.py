"""The error every data problem raises: a message that names the file and the fix."""


class DataError(ValueError):
    """The user's data can't be used as it is; the message says which file and why."""
