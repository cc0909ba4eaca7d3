"""``python -m tfeed``: the ``tfeed`` command (see :mod:`tfeed.app.cli`)."""

import sys

from tfeed.app.cli import main

sys.exit(main())
