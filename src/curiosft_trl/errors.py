"""The user-facing errors: raised by the library, printed by the CLIs as one `error: ...` line; and the input
checks every stage shares.

Each message names the file, key, row or path that is wrong and what was expected.
"""

from pathlib import Path


class DataError(ValueError):
    """A dataset that cannot be used as given; the message names the source, the row and what was expected."""


class RecipeError(ValueError):
    """A recipe or command line that cannot run; the message says which key or path and what was expected."""


class RunError(RuntimeError):
    """A stage that a study runs in its own process failed; the message names the run and quotes the end of its log."""


def check_output_dir(output_dir: str, holds: str) -> None:
    """`output_dir` must be a folder or a path one can be made at, not a file nor inside one: checked before anything
    loads, since the first write would otherwise fail after a model had loaded. `holds` says what the folder is for."""
    path = Path(output_dir).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise RecipeError(f"output_dir: {output_dir} {where}; expected a folder for {holds}.")
