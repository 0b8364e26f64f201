"""Answers to packets the switch sends lbaffd: refusals and IPv6 neighbor
advertisements for VIPs."""
