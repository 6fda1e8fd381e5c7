"""Thin entry points: parse a recipe with TRL's `TrlParser` (`curiosft_trl.recipe`), hand off to the library, print
errors in one line. The library never imports this package."""

import sys
from collections.abc import Callable

from ..errors import DataError, RecipeError, RunError
from ..known_warnings import quiet_known_warnings


def run_cli(main: Callable[[], None]) -> None:
    """Run `main`, turning configuration and data errors into one `error: ...` line and exit status 2, and a failed
    run of a study's stage into its message (which quotes the run's log) and exit status 1."""
    quiet_known_warnings()
    try:
        main()
    except (RecipeError, DataError, FileNotFoundError, RunError) as e:
        print(f"error: {_capped(str(e))}", file=sys.stderr)
        sys.exit(1 if isinstance(e, RunError) else 2)


MAX_ERROR_CHARS = 4000  # a message that quotes a huge value (a pasted file, an expanded YAML alias) stays readable


def _capped(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    return f"{message[:MAX_ERROR_CHARS]}... ({len(message) - MAX_ERROR_CHARS:,} more characters)"
