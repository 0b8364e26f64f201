"""lbaffd: session affinity for OVN load balancers, realized on br-int over OpenFlow 1.5.

Data flow: ``sb`` (OVSDB monitor) -> ``model`` (parsed, immutable) -> ``compiler``
(desired flows/groups) -> ``diff`` -> ``openflow`` (bundle to the switch).
"""

__version__ = "0.1.0"
