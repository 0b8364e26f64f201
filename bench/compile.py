"""Micro benchmark of compiling the cold benchmark's desired state: through
the pipeline stages (FlowSpecs, then ``wire``) and with templates (``templates``).

Not a test and no switch: ``N`` LBs, one VIP each, 5 backends, affinity, on a
local switch and a router (``bench.encode.corpus_inputs``); best of
``--repeat`` full compiles each way, from a fresh compile cache (as a cold
pass), and a check that both give the same state.
``python -m bench.compile [--lbs 5000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.encode import corpus_inputs
from lbaffd.compile.layout import STANDALONE
from lbaffd.compile.state import DesiredState, VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.plan import vip_owners


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compile", description=__doc__)
    ap.add_argument("--lbs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3, help="best of (default 3)")
    args = ap.parse_args(argv)
    lbs, topo = corpus_inputs(args.lbs)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    states: dict[bool, DesiredState] = {}
    for templates in (False, True):
        best = float("inf")
        for _ in range(args.repeat):
            cache = VipCache(templates=templates)
            gc.collect()
            gc.disable()  # as the daemon's full pass (GcPause)
            try:
                start = time.perf_counter()
                states[templates] = compile_state(lbs, topo, ids, STANDALONE, cache=cache)
                best = min(best, time.perf_counter() - start)
            finally:
                gc.enable()
        flows = len(states[templates].state.flows)
        print(f"{'templates' if templates else 'stages':10s} {best:6.3f} s for {args.lbs} LBs "
              f"({flows} flows): {best / args.lbs * 1e6:6.1f} us per VIP")
    same = states[False] == states[True]
    print(f"same state both ways: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
