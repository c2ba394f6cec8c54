"""``python -m ptebench``."""

from ptebench.cli import main

if __name__ == "__main__":
    main()
