"""lbaffd: session affinity for OVN load balancers, realized on br-int over OpenFlow 1.5.

Data flow: ``sb`` (OVSDB monitor) -> ``model`` (parsed, immutable) -> ``compiler``
(desired flows/groups) -> ``diff`` -> ``openflow`` (bundle to the switch).
"""

from importlib.metadata import PackageNotFoundError, version

try:  # set from git tags when built (setuptools-scm, pyproject.toml)
    __version__ = version("lbaffd")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
