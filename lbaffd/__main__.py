"""``python -m lbaffd``."""

import sys

from lbaffd.cli import main

sys.exit(main())
