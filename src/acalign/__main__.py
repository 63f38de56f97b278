"""``python -m acalign`` runs the CLI."""

import sys

from acalign.cli import main

sys.exit(main())
