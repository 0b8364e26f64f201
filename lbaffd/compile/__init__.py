"""Planned VIPs -> the desired OpenFlow state (pure): the table layouts of the
three modes (``layout``), the stages' flows, a VIP's part, shapes (templates),
group splitting, and the compile of a whole state."""
