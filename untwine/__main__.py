"""``python -m untwine`` runs the command line."""

import sys

from untwine.cli import main

sys.exit(main())
