"""The user-facing errors: raised by the library, printed by the CLIs as one `error: ...` line.

Each message names the file, key, row or path that is wrong and what was expected.
"""


class DataError(ValueError):
    """A dataset that cannot be used as given; the message names the source, the row and what was expected."""


class RecipeError(ValueError):
    """A recipe or command line that cannot run; the message says which key or path and what was expected."""
