"""What lbaffd works from, parsed and planned: the SB rows as read
(``records``, frozen copies the OVSDB adapter ``lbaffd.sb`` makes), load
balancers (``loadbalancer``), this chassis' topology (with, next to
ovn-controller, OVN's output stage: ``ovnlayout``), ownership of flows and
groups, the planning of VIPs.  Nothing here imports an adapter."""
