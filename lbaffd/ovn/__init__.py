"""Companion mode: living next to ovn-controller on its br-int (which LBs are
taken over, OVN's output stage, its flushes)."""
