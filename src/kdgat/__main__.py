"""``python -m kdgat ...``: the ``kdgat`` command where its entry point is not installed (``PYTHONPATH=src``, a
container image that has the dependencies but not this package)."""

import sys

from kdgat.cli import main

sys.exit(main())
