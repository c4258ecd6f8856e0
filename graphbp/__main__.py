"""``python -m graphbp ...`` runs the command line (see :mod:`graphbp.cli`)."""

import sys

from .cli import main

sys.exit(main())
