"""Release artefacts: ``python -m build`` makes a wheel and an sdist versioned
by the git tag, the wheel installs lbaffd(8) and a working ``lbaffd``;
``make image`` builds with the OCI builder present or says why it cannot; the
ovnkube-node example validates as the DaemonSet does."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import yaml

from lbaffd.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VERSION = "7.8.9"


def run(*cmd: str, cwd: Path | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def tagged_checkout(where: Path) -> Path:
    """The committed tree as a fresh repository whose HEAD is tagged v7.8.9."""
    src = where / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True,
                             check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True, timeout=60)
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"],
                 ["tag", f"v{VERSION}"]):
        subprocess.run([*git, *step], check=True, capture_output=True, timeout=60)
    return src


def test_build_makes_a_wheel_and_an_sdist_versioned_by_the_git_tag(tmp_path: Path) -> None:
    src = tagged_checkout(tmp_path)
    dist = tmp_path / "dist"
    # --no-isolation: this venv has the build requirements (the test extra), so the
    # test needs no index; an isolated build fetches the same ones
    res = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    wheel = dist / f"lbaffd-{VERSION}-py3-none-any.whl"
    sdist = dist / f"lbaffd-{VERSION}.tar.gz"
    assert sorted(p.name for p in dist.iterdir()) == sorted([wheel.name, sdist.name])

    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        meta = whl.read(f"lbaffd-{VERSION}.dist-info/METADATA").decode()
        page = whl.read(f"lbaffd-{VERSION}.data/data/share/man/man8/lbaffd.8").decode()
        scripts = whl.read(f"lbaffd-{VERSION}.dist-info/entry_points.txt").decode()
    assert f"Version: {VERSION}\n" in meta and "lbaffd = lbaffd.cli:main" in scripts
    assert "lbaffd/ops/daemonize.py" in names and "lbaffd/openflow/messages.py" in names
    assert page.startswith('.TH LBAFFD "8" ') and f'"lbaffd {VERSION}"' in page.splitlines()[0]
    assert "\\fB\\-\\-detach\\fR" in page and ".SH METRICS" in page

    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
        info = tar.extractfile(f"lbaffd-{VERSION}/PKG-INFO")
        assert info is not None and f"Version: {VERSION}\n" in info.read().decode()
    assert {"pyproject.toml", "man/parser.py", "man/lbaffd.include", "lbaffd/cli.py",
            "Dockerfile", "deploy/grafana/lbaffd.json"} <= members

    # installed (no dependencies needed for --version and the man page)
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(venv)).returncode == 0
    res = run(sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
              "--no-deps", "--no-index", str(wheel))
    assert res.returncode == 0, res.stderr
    assert run(str(venv / "bin/lbaffd"), "--version").stdout.strip() == f"lbaffd {VERSION}"
    assert (venv / "share/man/man8/lbaffd.8").read_text() == page


def test_make_image_builds_with_the_builder_present_or_says_why_not() -> None:
    which = run(str(ROOT / "deploy/build-image.sh"), "--which").stdout.strip()
    assert which in {"podman", "buildah", "docker", "none"}
    if which == "none":  # this machine: docker's CLI but no engine, no podman/buildah
        res = run("make", "-s", "image", cwd=ROOT)
        assert res.returncode == 0, res.stderr
        assert "make image: skipped: no OCI image builder here" in res.stdout
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG LBAFFD_VERSION" in text and "SETUPTOOLS_SCM_PRETEND_VERSION" in text
    assert "COPY man ./man" in text  # the man page is built inside the image build too


def test_ovnkube_node_example_validates_and_passes_real_flags() -> None:
    path = ROOT / "deploy/ovnkube-node-lbaffd.yaml"
    res = run(str(BIN / "kubernetes-validate"), "--strict", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    ds = yaml.safe_load(path.read_text())
    assert (ds["kind"], ds["metadata"]["name"]) == ("DaemonSet", "ovnkube-node")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    containers = {c["name"]: c for c in spec["containers"]}
    assert {"ovn-controller", "lbaffd"} <= containers.keys()
    lbaffd = containers["lbaffd"]
    args = build_parser().parse_args(["run", *lbaffd["args"]])  # every flag is lbaffd's
    assert args.ovs_rundir == "/var/run/openvswitch"
    mounts = {m["name"]: m["mountPath"] for m in lbaffd["volumeMounts"]}
    shared = {m["name"] for m in containers["ovn-controller"]["volumeMounts"]}
    assert mounts["host-var-run-ovs"] == "/var/run/openvswitch" and "host-var-run-ovs" in shared
    assert lbaffd["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert lbaffd["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert lbaffd["securityContext"]["readOnlyRootFilesystem"] is True
