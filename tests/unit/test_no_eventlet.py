"""lbaffd never loads eventlet (``lbaffd/__init__.py``): python-ovs's poller
would import it only to ask about monkey patching, at ~0.15 s and 13 MB of
every daemon.  Checked in a fresh interpreter, after importing every module
of the package (none needs it) and the daemon's entry point."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import pkgutil, importlib, sys
import lbaffd
for m in pkgutil.walk_packages(lbaffd.__path__, "lbaffd."):
    if m.name != "lbaffd.__main__":
        importlib.import_module(m.name)
import ovs.poller
loaded = [n for n, m in sys.modules.items() if n.split(".")[0] == "eventlet"
          and m is not None]
print(len(loaded), ovs.poller.eventlet_patcher)
"""


def test_no_module_of_lbaffd_loads_eventlet() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["0", "None"], out.stdout + out.stderr
