"""The SB monitor conditions derived from the local interest."""

from __future__ import annotations

from types import MappingProxyType

from lbaffd.model.records import (
    DatapathRow,
    DpGroupRow,
    InterfaceRow,
    PortBindingRow,
    SbSnapshot,
)
from lbaffd.model.topology import build_topology
from lbaffd.sb.conditions import Interest, conditions, interest


def test_conditions_follow_the_interest() -> None:
    want = Interest("ch-uuid", frozenset({"vif-b", "vif-a"}), frozenset({"dp2", "dp1"}),
                    frozenset({"g1"}))
    c = conditions(want, ("datapath_group", "ls_datapath_group"))
    pb = c["Port_Binding"]
    assert ["type", "==", "patch"] in pb and ["type", "==", "chassisredirect"] in pb
    assert ["chassis", "==", ["uuid", "ch-uuid"]] in pb
    assert [x for x in pb if x[0] == "logical_port"] == [["logical_port", "==", "vif-a"],
                                                         ["logical_port", "==", "vif-b"]]
    assert [x for x in pb if x[0] == "datapath"] == [["datapath", "==", ["uuid", "dp1"]],
                                                     ["datapath", "==", ["uuid", "dp2"]]]
    assert c["Logical_DP_Group"] == [["datapaths", "includes", ["uuid", "dp1"]],
                                     ["datapaths", "includes", ["uuid", "dp2"]]]
    assert ["datapath_group", "==", ["uuid", "g1"]] in c["Load_Balancer"]
    assert ["ls_datapath_group", "==", ["uuid", "g1"]] in c["Load_Balancer"]
    # nothing local: no LB, no group (OVSDB: [False] matches no row)
    none = conditions(Interest(None, frozenset(), frozenset(), frozenset()), ("datapath_group",))
    assert none["Load_Balancer"] == [False] and none["Logical_DP_Group"] == [False]


def test_interest_is_the_local_datapaths_closure_and_their_groups() -> None:
    dps = {"ls1": DatapathRow("ls1", 1), "lr": DatapathRow("lr", 2, is_router=True),
           "ls2": DatapathRow("ls2", 3)}
    pbs = {
        "a": PortBindingRow("a", "vif", "ls1", 1, ("02:00:00:00:00:01 10.0.0.1",), "me"),
        "p1": PortBindingRow("p1", "ls1-lr", "ls1", 2, (), None, "patch",
                             MappingProxyType({"peer": "lr-ls1"})),
        "p2": PortBindingRow("p2", "lr-ls1", "lr", 1, (), None, "patch",
                             MappingProxyType({"peer": "ls1-lr"})),
    }
    groups = {"g-lr": DpGroupRow("g-lr", ("lr",)), "g-far": DpGroupRow("g-far", ("ls2",))}
    snap = SbSnapshot(MappingProxyType({}), MappingProxyType(dps), MappingProxyType(groups),
                      MappingProxyType(pbs), (InterfaceRow("tap0", 5, "vif"),), "me")
    got = interest(snap, build_topology(snap), "ch")
    assert got == Interest("ch", frozenset({"vif"}), frozenset({"ls1", "lr"}),
                           frozenset({"g-lr"}))
