"""`python -m curiosft_trl.tiny [--force]`: build (or rebuild) the cached tiny base and report its quality.

The cache is `$CURIOSFT_TINY_CACHE`, else `~/.cache/curiosft_trl/tiny-base-v3`.
"""

from curiosft_trl.tiny.base import main

if __name__ == "__main__":
    main()
