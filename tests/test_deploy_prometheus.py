"""deploy/prometheus/prometheus.yml: promtool loads it, it scrapes what injection names, and its
relabelling gives a proxy's samples the namespace, pod and owner labels Linkerd's viz gives them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from proxy.inject import names

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "prometheus.yml"


def test_promtool_loads_the_scrape_configuration(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./scripts/bootstrap.sh --test installs Debian's prometheus package"
    run = subprocess.run([promtool, "check", "config", str(CONFIG)], capture_output=True, timeout=60)
    report = (run.stdout + run.stderr).decode()
    if run.returncode != 0 and "field kubernetes_sd_configs not found" in report:
        # Debian builds Prometheus without Kubernetes discovery: check everything
        # else (the relabelling, the globals) with a static target in its place.
        config = yaml.safe_load(CONFIG.read_text())
        [job] = config["scrape_configs"]
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["127.0.0.1:4191"]}]
        local = tmp_path / "prometheus.yml"
        local.write_text(yaml.safe_dump(config))
        run = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, timeout=60)
        report = (run.stdout + run.stderr).decode()
    assert run.returncode == 0, report


def _relabel(meta: dict[str, str]) -> dict[str, str] | None:
    """Prometheus's keep / replace / labelmap actions (the ones the file uses) over one target's labels."""
    [job] = yaml.safe_load(CONFIG.read_text())["scrape_configs"]
    labels = dict(meta)
    for rule in job["relabel_configs"]:
        action = rule.get("action", "replace")
        regex = re.compile(rule.get("regex", "(.*)"))
        if action == "labelmap":
            for name, value in list(labels.items()):
                match = regex.fullmatch(name)
                if match:
                    labels[match.expand(rule.get("replacement", r"\1").replace("$", "\\"))] = value
            continue
        value = ";".join(labels.get(name, "") for name in rule["source_labels"])
        match = regex.fullmatch(value) if not regex.pattern.startswith("^") else regex.match(value)
        if action == "keep":
            if not match:
                return None
        elif action == "replace" and match:
            labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def _pod(kind: str, controller: str, container: str = names.PROXY_CONTAINER,
         port: str = names.ADMIN_PORT_NAME) -> dict[str, str]:
    return {"__meta_kubernetes_namespace": "shop", "__meta_kubernetes_pod_name": f"{controller}-x2x9q",
            "__meta_kubernetes_pod_container_name": container, "__meta_kubernetes_pod_container_port_name": port,
            "__meta_kubernetes_pod_controller_kind": kind, "__meta_kubernetes_pod_controller_name": controller,
            "__meta_kubernetes_pod_label_app": "web"}


def test_targets_get_the_workload_labels():
    got = _relabel(_pod("ReplicaSet", "web-7d9f8b6c4d"))
    assert got == {"namespace": "shop", "pod": "web-7d9f8b6c4d-x2x9q", "deployment": "web", "app": "web",
                   "container": names.PROXY_CONTAINER}
    assert _relabel(_pod("StatefulSet", "db"))["statefulset"] == "db"
    assert _relabel(_pod("DaemonSet", "agent"))["daemonset"] == "agent"
    assert _relabel(_pod("Job", "migrate"))["k8s_job"] == "migrate"


def test_only_the_proxys_admin_port_is_scraped():
    assert _relabel(_pod("ReplicaSet", "web-7d9f8b6c4d", container="app")) is None
    assert _relabel(_pod("ReplicaSet", "web-7d9f8b6c4d", port=names.INBOUND_PORT_NAME)) is None
