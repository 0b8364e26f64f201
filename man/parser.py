"""lbaffd's argument parser for argparse-manpage at build time
(``[tool.build_manpages]`` in pyproject.toml).

An isolated build (``python -m build``, ``pip install .``) runs in a fresh
environment where the ``lbaffd`` package is not installed yet; its parser
needs only the standard library, so the source tree is put on the path.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lbaffd.cli import build_parser  # noqa: E402

__all__ = ["build_parser"]
