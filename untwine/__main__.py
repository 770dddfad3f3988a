"""``python -m untwine`` runs the command line."""

import sys

from untwine.cli import main

if __name__ == "__main__":  # importing the module (as the API reference does) must not run the command line
    sys.exit(main())
