"""``python -m cli`` runs the ``tumorseg`` command."""

import sys

from cli.main import main

sys.exit(main())
