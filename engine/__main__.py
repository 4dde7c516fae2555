"""``python -m engine``: the same command line as ``klimaflow``."""

from engine.cli import main

if __name__ == "__main__":
    main()
