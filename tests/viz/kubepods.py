"""Pod objects as the API server lists them, for the ``viz --kubernetes`` tests."""

from __future__ import annotations


def pod(name: str, *, namespace: str = "default", container: str | None = "meshproxy", phase: str = "Running",
        ip: str | None = "127.0.0.1", ports: dict[str, int] | None = None, owner: tuple[str, str] | None = None,
        template_hash: str | None = None, account: str = "default", env: dict[str, str] | None = None) -> dict:
    containers = [{"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}]
    if container is not None:
        containers.append({"name": container, "image": "meshproxy:1",
                           "ports": [{"name": k, "containerPort": v} for k, v in (ports or {}).items()],
                           "env": [{"name": k, "value": v} for k, v in (env or {}).items()]})
    meta: dict = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": {}}
    if template_hash:
        meta["labels"]["pod-template-hash"] = template_hash
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True}]
    status: dict = {"phase": phase}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"serviceAccountName": account, "containers": containers}, "status": status}


def kubeconfig(server: str, token: str | None = None, namespace: str | None = None) -> str:
    user = f"\n    token: {token}" if token else " {}"
    return f"""apiVersion: v1
kind: Config
current-context: test
contexts:
- name: test
  context:
    cluster: fake
    user: tester{f'''
    namespace: {namespace}''' if namespace else ''}
clusters:
- name: fake
  cluster:
    server: {server}
users:
- name: tester
  user:{user}
"""
