"""lbaffd: session affinity for OVN load balancers, realized on br-int over OpenFlow 1.5.

Data flow: ``sb`` (OVSDB monitor) -> ``model`` (parsed, immutable) -> ``compile``
(desired flows/groups) -> ``reconcile`` (diff) -> ``openflow`` (bundle to the switch).
"""

import sys
from importlib.metadata import PackageNotFoundError, version

# lbaffd runs on native threads, never eventlet.  os-ken installs eventlet as
# a dependency, and python-ovs's ``ovs/poller.py`` imports it whenever it is
# installed, only to ask whether it monkey patched ``select`` (its bare
# ``except:`` falls back when the import fails).  That import was ~0.15 s of
# every start and 13 MB of the daemon's RSS; ``None`` in ``sys.modules``
# makes ``import eventlet`` raise ImportError.  (A process that imported
# eventlet before lbaffd keeps it.)
if "eventlet" not in sys.modules:
    sys.modules["eventlet"] = None  # type: ignore[assignment]  # (the import system's own convention)

try:  # set from git tags when built (setuptools-scm, pyproject.toml)
    __version__ = version("lbaffd")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
