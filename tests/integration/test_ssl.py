"""The SB over ssl: with key, certificate and CA flags (certificates made by the
test with openssl), and what happens with the wrong CA or missing flags."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbaffd_sandbox.sandbox import Sandbox, run
from lbaffd_sandbox.topology import build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, sandbox_in_tmp

pytestmark = [pytest.mark.integration, pytest.mark.traffic]


@pytest.fixture(scope="module")
def ssl_sandbox() -> Iterator[Sandbox]:
    with sandbox_in_tmp("lbx-ssl-", sb_ssl_port=free_port()) as sb:
        build_demo_topology(sb, affinity_timeout=60)
        yield sb


def ssl_flags(sb: Sandbox, ca: Path | None = None) -> list[str]:
    pki = sb.pki()
    return ["--sb-db", sb.sb_ssl_remote, "--ssl-private-key", str(pki["client-key"]),
            "--ssl-certificate", str(pki["client-cert"]),
            "--ssl-ca-cert", str(ca or pki["ca-cert"])]


def test_sb_over_ssl(ssl_sandbox: Sandbox) -> None:
    sb = ssl_sandbox
    d = LbaffdProcess(sb, *ssl_flags(sb), minimal=True)
    d.start()
    try:
        assert d.wait_event("settings")["sb_db"] == sb.sb_ssl_remote
        assert sb.dump_flows("cookie=0x1baf000000000000/0xffff000000000000")
        seen = {r.backend for r in sb.connect("cli1", "10.0.0.100", 80, count=5)}
        assert len(seen) == 1
    finally:
        d.stop()


def test_wrong_ca_never_syncs_and_says_why(ssl_sandbox: Sandbox) -> None:
    sb = ssl_sandbox
    other = sb.rundir / "pki" / "other-ca.pem"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=someone-else", "-keyout", str(sb.rundir / "pki" / "other-ca-key.pem"),
        "-out", str(other))
    sb.ofctl("del-flows", "br-int")
    d = LbaffdProcess(sb, *ssl_flags(sb, ca=other), minimal=True)
    d.start(wait_sync=False)
    try:
        d.wait_event("ovsdb_unreachable", db="OVN_Southbound", timeout=20)
        assert d.count("initial_sync_done") == 0
        assert sb.dump_flows() == []
        assert d.log_path is not None and "Traceback" not in d.log_path.read_text()
    finally:
        assert d.stop() < 2.0


def test_ssl_remote_without_key_flags_is_refused(ssl_sandbox: Sandbox) -> None:
    res = subprocess.run([sys.executable, "-m", "lbaffd", "run", "--ovs-rundir",
                          str(ssl_sandbox.rundir), "--sb-db", ssl_sandbox.sb_ssl_remote,
                          "--rundir", str(ssl_sandbox.rundir / "lbaffd-x"),
                          "--metrics-address", ""],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "--ssl-private-key" in res.stderr and "Traceback" not in res.stderr
