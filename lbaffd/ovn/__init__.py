"""Companion mode: living next to ovn-controller on its br-int (which LBs are
taken over, OVN's output stage read from the switch, its flushes).  What is
read of OVN's pipeline is kept in the model (``lbaffd.model.ovnlayout``)."""
