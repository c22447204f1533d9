"""deploy/prometheus/alerts.yml: promtool loads the rules, and their unit tests
(deploy/prometheus/alerts_test.yml: a firing and a quiet case for every alert) pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = DEPLOY / "alerts.yml"
UNIT_TESTS = DEPLOY / "alerts_test.yml"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./scripts/bootstrap.sh --test installs Debian's prometheus package"
    return promtool


def _alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
            if "alert" in rule]


def test_promtool_checks_the_rules():
    run = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_unit_tests_pass():
    run = subprocess.run([_promtool(), "test", "rules", str(UNIT_TESTS)], capture_output=True, text=True,
                         timeout=120, cwd=DEPLOY)
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_the_alerts_the_issue_asks_for():
    names = {rule["alert"] for rule in _alerts()}
    assert {"MeshproxySuccessRateBurnFast", "MeshproxySuccessRateBurnSlow", "MeshproxyLatencyBurnFast",
            "MeshproxyLatencyBurnSlow", "MeshproxyP99LatencyHigh", "MeshproxyProxyDown",
            "MeshproxyCertificateExpiresSoon", "MeshproxyCertificateExpiring", "MeshproxyAuthorizationDenialsRising",
            "MeshproxyTcpAuthorizationDenialsRising", "MeshproxyRetryBudgetExhausted"} <= names
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("page", "ticket", "warning"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule


@pytest.mark.parametrize("alert", [rule["alert"] for rule in _alerts()])
def test_every_alert_is_unit_tested_firing_and_quiet(alert):
    """Each alert has a case where it fires and one where it does not (the firing cases also list exactly
    which workloads fire, so the healthy ones beside them are checked quiet too)."""
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), f"{alert}: no case where it fires"
    assert any(not case["exp_alerts"] for case in cases), f"{alert}: no case where it stays quiet"


def test_the_proxy_down_alert_watches_the_shipped_scrape_job():
    [job] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    [down] = [rule for rule in _alerts() if rule["alert"] == "MeshproxyProxyDown"]
    assert f'job="{job["job_name"]}"' in down["expr"]
