"""The alert rules checked and unit-tested by Prometheus' own promtool (Debian
package ``prometheus``), and the PrometheusRule form kept equal to them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.operator_kit import RULE_CR, RULE_TESTS, RULES, rule_groups


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: `make deb-deps` installs Debian's prometheus package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check() -> None:
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 10 rules found" in res.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    res = promtool("test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", ())}
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    assert tested == alerts  # every alert has a unit test


def test_promtool_catches_a_bad_rule_and_a_wrong_expectation(tmp_path: Path) -> None:
    """The two checks above are only worth something if they can fail."""
    bad_rules = tmp_path / "bad-rules.yaml"
    bad_rules.write_text(RULES.read_text().replace("> 180", "> > 180"))
    assert promtool("check", "rules", str(bad_rules)).returncode != 0
    rules = tmp_path / "lbaffd-rules.yaml"
    rules.write_text(RULES.read_text())
    wrong = tmp_path / "wrong.test.yaml"
    wrong.write_text(RULE_TESTS.read_text()
                     .replace("../../deploy/prometheus/lbaffd-rules.yaml", str(rules))
                     .replace("900k affinity entries", "800k affinity entries"))
    res = promtool("test", "rules", str(wrong))
    assert res.returncode != 0 and "LbaffdAffinityEntriesNearBudget" in res.stdout + res.stderr


def test_prometheusrule_holds_the_same_rules_and_passes_promtool(tmp_path: Path) -> None:
    cr = yaml.safe_load(RULE_CR.read_text())
    assert (cr["apiVersion"], cr["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert cr["metadata"]["name"] == "lbaffd" and cr["metadata"]["namespace"]
    assert cr["spec"]["groups"] == rule_groups()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(cr["spec"]))
    res = promtool("check", "rules", str(spec))
    assert res.returncode == 0, res.stdout + res.stderr
