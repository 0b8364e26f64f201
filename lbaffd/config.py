"""Daemon settings: CLI flags first, then the local Open_vSwitch row's
``external_ids`` (``ovn-remote``, ``ovn-bridge``, ``system-id``) as
ovn-controller reads them, then built-in defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace


def default_ovs_rundir() -> str:
    return os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")


@dataclass(frozen=True, slots=True)
class Settings:
    ovs_db: str = ""
    sb_db: str = ""
    bridge: str = ""
    of_target: str = ""
    ovs_rundir: str = ""
    chassis: str = ""
    log_format: str = "console"
    log_level: str = "info"
    audit_interval: float = 10.0
    debounce: float = 0.02
    metrics_address: str = "127.0.0.1:9476"

    def with_defaults(self) -> Settings:
        rundir = self.ovs_rundir or default_ovs_rundir()
        return replace(self, ovs_rundir=rundir, ovs_db=self.ovs_db or f"unix:{rundir}/db.sock")

    def resolve(self, external_ids: Mapping[str, str]) -> Settings:
        """Fill what the flags left open from ``Open_vSwitch.external_ids``."""
        s = self.with_defaults()
        bridge = s.bridge or external_ids.get("ovn-bridge", "") or "br-int"
        return replace(
            s,
            sb_db=s.sb_db or external_ids.get("ovn-remote", ""),
            bridge=bridge,
            chassis=s.chassis or external_ids.get("system-id", ""),
            of_target=s.of_target or f"unix:{s.ovs_rundir}/{bridge}.mgmt",
        )
