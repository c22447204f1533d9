"""``python -m proxy`` is the ``meshproxy`` command."""

import sys

from proxy.cli import main

sys.exit(main())
