"""``python -m pushgate``: the ``pushgate`` command."""

import sys

from pushgate.cli import app

sys.exit(app())
