"""The systemd unit, the container image recipe and the Kubernetes manifests,
checked with the real tools (systemd-analyze, hadolint, kubernetes-validate)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_systemd_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    unit = (ROOT / "systemd/lbaffd.service").read_text()
    # verify also checks that ExecStart exists: point it at this venv's entry point
    unit = unit.replace("/usr/local/bin/lbaffd", str(BIN / "lbaffd"))
    (tmp_path / "lbaffd.service").write_text(unit)
    res = run("systemd-analyze", "verify", "--man=no", str(tmp_path / "lbaffd.service"))
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    for needed in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
                   "ProtectSystem=strict", "ReadWritePaths=", "CapabilityBoundingSet=",
                   "After=network.target openvswitch-switch.service", "ovn-controller.service",
                   "EnvironmentFile=-/etc/default/lbaffd"):
        assert needed in unit


def test_systemd_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above is only worth something if a bad unit fails it."""
    (tmp_path / "bad.service").write_text("[Service]\nExecStart=/bin/true\nWachdogSec=3\n")
    res = run("systemd-analyze", "verify", "--man=no", str(tmp_path / "bad.service"))
    assert "Unknown key" in res.stderr


def test_default_file_names_only_real_settings() -> None:
    from lbaffd.config import ENV_PREFIX, settings_fields

    names = {line.lstrip("#").split("=")[0] for line in
             (ROOT / "systemd/lbaffd.default").read_text().splitlines()
             if line.lstrip("#").startswith(ENV_PREFIX)}
    known = {ENV_PREFIX + n.upper() for n in settings_fields()} | {ENV_PREFIX + "CONFIG"}
    assert names and names <= known


def test_dockerfile_lints_clean() -> None:
    res = run(str(BIN / "hadolint"), str(ROOT / "Dockerfile"))
    assert res.returncode == 0, res.stdout + res.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in text and "USER 10001" in text


def test_hadolint_catches_mistakes(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM debian:latest\nRUN apt-get install curl\n")
    assert run(str(BIN / "hadolint"), str(tmp_path / "Dockerfile")).returncode != 0


def test_kubernetes_manifests_validate() -> None:
    res = run(str(BIN / "kubernetes-validate"), "--strict", str(ROOT / "deploy/daemonset.yaml"))
    assert res.returncode == 0, res.stdout + res.stderr
    text = (ROOT / "deploy/daemonset.yaml").read_text()
    for needed in ("hostNetwork: true", "/var/run/openvswitch", "livenessProbe",
                   "readinessProbe", "/healthz", "/readyz", "host: 127.0.0.1"):
        assert needed in text


def test_kubernetes_validate_catches_mistakes(tmp_path: Path) -> None:
    bad = (ROOT / "deploy/daemonset.yaml").read_text().replace("hostNetwork: true",
                                                               "hostNetwork: yes-please")
    (tmp_path / "bad.yaml").write_text(bad)
    assert run(str(BIN / "kubernetes-validate"), "--strict", str(tmp_path / "bad.yaml")
               ).returncode != 0


def test_tools_are_the_venv_ones() -> None:
    assert shutil.which("systemd-analyze")
    assert (BIN / "hadolint").exists() and (BIN / "kubernetes-validate").exists()
