"""Thin entry points: parse a recipe with TRL's `TrlParser`, hand off to the library, print errors in one line."""

import sys
from collections.abc import Callable

from ..data import DataError


class RecipeError(ValueError):
    """A recipe or command line that cannot run; the message says which key or path and what was expected."""


def run_cli(main: Callable[[], None]) -> None:
    """Run `main`, turning configuration and data errors into one `error: ...` line and exit status 2."""
    try:
        main()
    except (RecipeError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
