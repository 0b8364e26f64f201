"""What lbaffd works from, parsed and planned: load balancers (``loadbalancer``),
this chassis' topology, ownership of flows and groups, the planning of VIPs."""
