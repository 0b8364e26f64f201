"""lbaffd's benchmark (``make bench`` / ``python -m bench``): see README.md, Benchmark."""

from lbaffd.cli import keep_eventlet_out

# The benchmarks that run the daemon in their own process (memprobe, compile)
# measure it as ``lbaffd run`` runs: without eventlet, which ``ovs.poller``
# would import (and its dnspython, ~13 MB) only to detect monkey patching.
keep_eventlet_out()
