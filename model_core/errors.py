"""The error every model reader raises: one type, so that callers catch one thing."""


class FormatError(ValueError):
    """The input is not a model this project can read; the message says why."""
