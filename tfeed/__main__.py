"""``python -m tfeed``: the ``tfeed`` command (see :mod:`tfeed.cli`)."""

import sys

from tfeed.cli import main

sys.exit(main())
