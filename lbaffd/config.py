"""Daemon settings: CLI flags first, then the local Open_vSwitch row's
``external_ids`` (``ovn-remote``, ``ovn-bridge``, ``system-id``) as
ovn-controller reads them, then built-in defaults."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from lbaffd.compile.layout import (
    COMPANION_BASE,
    COMPANION_MODE,
    COMPANION_ZONE,
    EMBEDDED_BASE,
    EMBEDDED_MODE,
    MODES,
    STANDALONE_MODE,
    Pipeline,
    companion,
    embedded,
)

AUTO_MODE = "auto"  # companion when ovn-controller manages the bridge, else standalone


def default_ovs_rundir() -> str:
    return os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")


ENV_PREFIX = "LBAFFD_"


def settings_fields() -> dict[str, type]:
    return {f.name: type(getattr(Settings(), f.name)) for f in fields(Settings)}


def load_settings(cli: Mapping[str, Any], env: Mapping[str, str],
                  file_values: Mapping[str, Any]) -> Settings:
    """One source of truth, by precedence: CLI flag > ``LBAFFD_<NAME>`` env var >
    config file > default.  (``Open_vSwitch.external_ids`` fills what is still
    empty later, in ``resolve``.)  Unknown keys are errors, not surprises."""
    known = settings_fields()
    unknown = set(file_values) - known.keys()
    if unknown:
        raise ValueError(f"unknown setting(s) in config file: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, kind in known.items():
        for source in (cli.get(name), env.get(ENV_PREFIX + name.upper()), file_values.get(name)):
            if source is not None:
                values[name] = _convert(kind, source)
                break
    return Settings(**values)


def _convert(kind: type, value: Any) -> Any:
    if kind is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return kind(value)


def read_config_file(path: str) -> dict[str, Any]:
    """A TOML file with the same keys as the flags (``sb_db = "ssl:..."``)."""
    if not path:
        return {}
    with open(path, "rb") as f:
        return dict(tomllib.load(f))


@dataclass(frozen=True, slots=True)
class Settings:
    ovs_db: str = ""
    sb_db: str = ""
    bridge: str = ""
    of_target: str = ""
    ovs_rundir: str = ""
    ovn_rundir: str = ""  # where ovn-controller's pidfile is (empty: $OVN_RUNDIR or /var/run/ovn)
    chassis: str = ""
    log_format: str = "console"
    log_level: str = "info"
    audit_interval: float = 60.0
    debounce: float = 0.0  # seconds to wait for more changes before a pass
    metrics_address: str = "127.0.0.1:9476"
    rundir: str = "/var/run/lbaffd"
    max_idle_timeout: int = 65535
    distribution: str = "balanced"
    cleanup_on_exit: bool = False
    monitor_all: bool = False  # True: no SB monitor conditions (see sbconditions)
    mode: str = AUTO_MODE
    table_base: int = -1  # -1: 0 standalone, 180 embedded, 200 companion
    next_table: int = -1  # -1: the first table after lbaffd's (embedded mode)
    take_over: str = "affinity"  # companion: LBs lbaffd balances (affinity | all)
    ct_zone: int = COMPANION_ZONE  # companion: lbaffd's own conntrack zone
    force: bool = False  # standalone/embedded: start although another controller's flows are there
    ssl_private_key: str = ""
    ssl_certificate: str = ""
    ssl_ca_cert: str = ""

    def pipeline(self, mode: str = "") -> Pipeline:
        """The stage tables these settings ask for, in ``mode`` (``auto``
        resolved by the caller; default: ``self.mode``).  ValueError if they clash."""
        mode = mode or self.mode
        if mode == EMBEDDED_MODE:
            base = EMBEDDED_BASE if self.table_base < 0 else self.table_base
            nxt = base + 7 if self.next_table < 0 else self.next_table
            return embedded(base, nxt)
        if mode == COMPANION_MODE:
            return companion(COMPANION_BASE if self.table_base < 0 else self.table_base,
                             self.ct_zone)
        if mode != STANDALONE_MODE:
            raise ValueError(f"--mode must be one of {', '.join((AUTO_MODE, *MODES))}, "
                             f"not {mode!r}")
        return Pipeline(base=max(self.table_base, 0))

    def with_defaults(self) -> Settings:
        rundir = self.ovs_rundir or default_ovs_rundir()
        return replace(self, ovs_rundir=rundir, ovs_db=self.ovs_db or f"unix:{rundir}/db.sock",
                       ovn_rundir=self.ovn_rundir or os.environ.get("OVN_RUNDIR", "/var/run/ovn"))

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
