"""`python -m curiosft_trl.tiny [DIR] [--force]`: build (or rebuild) the tiny base and report its quality.

DIR defaults to `outputs/tiny/base`, where `make tiny` builds it.
"""

from curiosft_trl.tiny.base import main

if __name__ == "__main__":
    main()
