"""A corpus of malformed SB Load_Balancer rows against the real daemon.

Each bad row gets exactly one structured log line with its reason; the good
load balancer's flows stay byte-identical and its traffic keeps flowing; the
daemon keeps running.  (An unknown ``protocol`` cannot be written: the SB
schema makes that column an enum, so ovsdb-server itself rejects it; the
parser's handling of it is unit-tested.)
"""

from __future__ import annotations

import json

import pytest

from lbaffd_sandbox.sandbox import Sandbox, run
from lbaffd_sandbox.topology import build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

OK = "10.0.0.21:8080"
# (vips, options, expected reason); each row is its own LB "bad-<n>"
CORPUS: list[tuple[dict[str, str], dict[str, str], str]] = [
    ({"10.0.1.300:80": OK}, {}, "bad_address"),
    ({"10.0.1.1:0": OK}, {}, "bad_port"),
    ({"10.0.1.1:65536": OK}, {}, "bad_port"),
    ({"10.0.1.1:abc": OK}, {}, "bad_port"),
    ({"10.0.1.1:-1": OK}, {}, "bad_port"),
    ({"10.0.1.2:80": "10.0.0.21:0"}, {}, "bad_port"),
    ({"10.0.1.2:80": "10.0.0.21:99999"}, {}, "bad_port"),
    ({"10.0.1.2:80": "10.0.0.21:"}, {}, "bad_port"),
    ({"10.0.1.3:80": "nonsense"}, {}, "bad_address"),
    ({"10.0.1.3:80": f"{OK},garbage"}, {}, "bad_address"),
    ({"fd00::1]:80": "[fd00::2]:80"}, {}, "bad_address"),
    ({"[fd00::1:80": "[fd00::2]:80"}, {}, "bad_address"),
    ({"[10.0.1.4]:80": OK}, {}, "bad_address"),
    ({"10.0.1.5:80:90": OK}, {}, "bad_address"),
    ({"10.0.1.6:80": "[fd00::2]:80"}, {}, "mixed_families"),
    ({"10.0.1.6:80": "[fd00::21]"}, {}, "mixed_families"),
    ({"10.0.1.7:80": "10.0.0.21"}, {}, "port_mismatch"),
    ({"10.0.1.7": "10.0.0.21:80"}, {}, "port_mismatch"),
    ({"0.0.0.0:80": OK}, {}, "bad_address"),
    ({"224.0.0.1:80": OK}, {}, "bad_address"),
    ({"255.255.255.255.1:80": OK}, {}, "bad_address"),
    ({"": OK}, {}, "empty_address"),
    ({"10.0.1.8:80": f"{OK},{OK}"}, {}, "duplicate_backend"),
    ({"10.0.1.9:80": OK, "10.0.1.9:0080": OK}, {}, "duplicate_vip"),
    ({"10.0.1.20:80": OK}, {"affinity_timeout": "-5"}, "bad_affinity_timeout"),
    ({"10.0.1.21:80": OK}, {"affinity_timeout": "86401"}, "bad_affinity_timeout"),
    ({"10.0.1.22:80": OK}, {"affinity_timeout": "abc"}, "bad_affinity_timeout"),
    ({"10.0.1.23:80": OK}, {"affinity_timeout": "1.5"}, "bad_affinity_timeout"),
    ({"10.0.1.24:80": OK}, {"affinity_timeout": ""}, "bad_affinity_timeout"),
    ({"10.0.1.11:80": OK}, {"distribution": "round-robin"}, "bad_distribution"),
    ({"[fd00::9]:80": "[fd00::21]:8080,[fd00::zz]:8080"}, {}, "bad_address"),
    ({"10.0.1.12:80": OK}, {"selection_fields": "ip_src,tp_bogus"}, "bad_selection_fields"),
    ({"10.0.1.13:80": OK}, {"hairpin_snat_ip": "10.0.0.999"}, "bad_hairpin_snat_ip"),
    ({"10.0.0.100:80": OK}, {}, "vip_conflict"),  # lb1's VIP on the same switch
    # Unicode digits are no number to OVN (str_to_int is ASCII strtoll)
    ({"10.0.1.30:\uff18\uff10": OK}, {}, "bad_port"),
    ({"10.0.1.31:80": "10.0.0.21:\uff18\uff10\uff18\uff10"}, {}, "bad_port"),
    ({"10.0.1.32:80": OK}, {"affinity_timeout": "\uff16\uff10"}, "bad_affinity_timeout"),
    ({"10.0.1.33:80": OK}, {"affinity_timeout": "1_000"}, "bad_affinity_timeout"),
]


def test_corpus(sandbox: Sandbox) -> None:
    topo = build_demo_topology(sandbox, affinity_timeout=60)
    daemon = LbaffdProcess(sandbox)
    daemon.start()
    try:
        pinned = {r.backend for r in sandbox.connect("cli1", topo.vip, 80, count=3)}
        before = sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
        for n, (vips, options, _) in enumerate(CORPUS):
            sandbox.add_load_balancer(f"bad-{n:02d}", vips, options=options,
                                      datapaths=[topo.datapath_uuid])
        victim_dp = sandbox.add_datapath("doomed", 9)
        sandbox.add_port_binding("doomed-port", victim_dp, 1, "02:00:00:00:09:01", "10.9.0.1")
        victim = sandbox.add_load_balancer("on-doomed-dp", {"10.9.0.100:80": "10.9.0.1:80"},
                                           datapaths=[victim_dp, topo.datapath_uuid])
        # the last row added is realized: the passes (one worker, SB updates in
        # order) have read every row before it
        assert wait_until(lambda: any("nw_dst=10.9.0.100" in f for f in sandbox.dump_flows()),
                          what="the flows of the last LB added")
        events = [e for e in daemon.events()
                  if e.get("event") in ("lb_input_rejected", "lb_input_warning")]
        for n, (_, _, reason) in enumerate(CORPUS):
            mine = [e for e in events if e["lb"] == f"bad-{n:02d}"]
            assert [e["reason"] for e in mine] == [reason], (n, CORPUS[n], mine)
            assert mine[0]["detail"]
        after = sandbox.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
        assert set(before) <= set(after)  # the good LB's flows: byte-identical
        # a datapath deleted mid-run (the LB's reference goes in the same transaction,
        # as northd does it): no crash, nothing stale, the rest untouched
        ops = [{"op": "mutate", "table": "Load_Balancer",
                "where": [["_uuid", "==", ["uuid", victim]]],
                "mutations": [["datapaths", "delete", ["set", [["uuid", victim_dp]]]]]},
               {"op": "delete", "table": "Port_Binding",
                "where": [["logical_port", "==", "doomed-port"]]},
               {"op": "delete", "table": "Datapath_Binding",
                "where": [["_uuid", "==", ["uuid", victim_dp]]]}]
        mark = daemon.mark()
        run("ovsdb-client", "transact", sandbox.sb_remote,
            json.dumps(["OVN_Southbound", *ops]), env=sandbox.env)
        assert wait_until(lambda: not any("metadata=0x9," in f for f in sandbox.dump_flows()),
                          what="the deleted datapath's flows gone")
        daemon.wait_pass(mark, audit=False)
        assert set(before) <= set(sandbox.dump_flows())
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert {r.backend for r in sandbox.connect("cli1", topo.vip, 80, count=3)} == pinned
        assert "Traceback" not in (daemon.log_path.read_text() if daemon.log_path else "")
    finally:
        daemon.stop()
