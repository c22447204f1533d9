"""``meshproxy check --pre`` and ``meshproxy check --proxy``: the cluster, through its API.

``--pre`` asks whether ``meshproxy install`` can work here: the API answers,
the version has native sidecars (1.29), the caller may create every kind of
object install prints (SelfSubjectAccessReview, the kinds taken from install
itself), and CRDs already in the cluster under the same names are
compatible. ``--proxy`` looks at each meshed pod: its proxy container is
ready, its certificate (the proxy's own metric, read through the API
server's pod proxy as ``linkerd viz`` reads proxies) is valid for at least a
day, and its version is the CLI's. Sections and lines follow ``linkerd
check``; a failing API stops the rest, as Linkerd's does.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Iterator

import proxy
from proxy.check import kube
from proxy.check.results import FAIL, Result, Section, fail, ok, skip, warn
from proxy.install import crds

MIN_VERSION = (1, 29)  # native sidecars (restartPolicy: Always init containers) on by default
CERT_MIN_LEFT = 86400.0  # a proxy certificate with less than a day left is reported
SIDECARS_URL = "https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/"
RBAC_URL = "https://kubernetes.io/docs/reference/access-authn-authz/rbac/"
INSTALL_HINT = "meshproxy install --crds | kubectl apply -f - && meshproxy install | kubectl apply -f -"


class Stop(Exception):
    """A check failed that the following ones need (Linkerd stops there too)."""


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + ("es" if lower.endswith("s") else "s")


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class Checker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client: kube.Client | None = None
        self.version: dict = {}

    # ---- kubernetes-api -----------------------------------------------------------

    def api(self) -> Iterator[Result]:
        from proxy import config

        title = "can initialize the client"
        try:
            cfg = config.load()
            self.client = kube.Client.from_settings(cfg.discovery, self.args.timeout, self.args.api)
        except (config.ConfigError, ValueError, OSError) as err:
            yield fail("k8s-client", title, str(err), "give the API server with --api URL or MESHPROXY_K8S_API")
            raise Stop from None
        if self.client is None:
            yield fail("k8s-client", title, "no API server: --api and MESHPROXY_K8S_API unset, not in a cluster",
                       "run kubectl proxy --port=8001, then meshproxy check --pre --api http://127.0.0.1:8001")
            raise Stop
        yield ok("k8s-client", title, self.client.url)
        title = "can query the Kubernetes API"
        try:
            answer = self.client.get("/version")
        except kube.ApiUnavailable as err:
            yield fail("k8s-api", title, str(err), "check the URL, the network and the CA file (MESHPROXY_K8S_CA_FILE)")
            raise Stop from None
        if answer.status != 200:
            yield fail("k8s-api", title, f"GET /version answered {answer.status}: {answer.message}",
                       "the token (MESHPROXY_K8S_TOKEN_FILE) is missing or not accepted; or use kubectl proxy")
            raise Stop
        self.version = answer.body
        yield ok("k8s-api", title, f"{self.client.url} {answer.body.get('gitVersion', '')}".strip())

    # ---- --pre ------------------------------------------------------------------------

    def version_check(self) -> Iterator[Result]:
        title = "is running the minimum Kubernetes API version"
        major, minor = (re.match(r"\d+", str(self.version.get(k, ""))) for k in ("major", "minor"))
        if major is None or minor is None:
            yield fail("k8s-version", title, f"cannot read the version from {self.version}",
                       "is this a Kubernetes API server?")
            return
        found = (int(major[0]), int(minor[0]))
        text = f"{found[0]}.{found[1]}"
        if found < MIN_VERSION:
            yield fail("k8s-version", title,
                       f"Kubernetes {text}: meshproxy needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or later "
                       "(the proxy runs as a native sidecar)", SIDECARS_URL)
        else:
            yield ok("k8s-version", title, f"Kubernetes {text}")

    def setup(self) -> Iterator[Result]:
        from proxy.install import controlplane, everything

        assert self.client is not None
        title = "control plane namespace does not already exist"
        answer = self.client.get(f"/api/v1/namespaces/{controlplane.NAMESPACE}")
        if answer.status == 200:
            yield fail("namespace", title, f"the {controlplane.NAMESPACE} namespace already exists",
                       "meshproxy uninstall | kubectl delete --ignore-not-found -f -; or, to apply over it, keep the "
                       "trust anchor: meshproxy install --identity-dir DIR | kubectl apply -f -")
        elif answer.status == 404:
            yield ok("namespace", title, "")
        else:
            yield fail("namespace", title, f"GET namespace answered {answer.status}: {answer.message}", RBAC_URL)
        kinds: dict[tuple[str, str], bool] = {}
        for doc in everything():
            kinds[(doc["apiVersion"], doc["kind"])] = "namespace" in doc["metadata"]
        cluster_wide = [k for k, namespaced in kinds.items() if not namespaced]
        denied = [kind for (api_version, kind) in cluster_wide if not self._may_create(api_version, kind, None)]
        title = "can create non-namespaced resources"
        if denied:
            yield fail("rbac-cluster", title, f"not allowed to create {', '.join(denied)}",
                       f"install as a cluster administrator; {RBAC_URL}")
        else:
            yield ok("rbac-cluster", title, ", ".join(k for _, k in cluster_wide))
        for (api_version, kind), namespaced in kinds.items():
            if not namespaced:
                continue
            title = f"can create {kind}s"
            if self._may_create(api_version, kind, controlplane.NAMESPACE):
                yield ok(f"rbac-{kind.lower()}", title, "")
            else:
                yield fail(f"rbac-{kind.lower()}", title,
                           f"not allowed to create {kind}s in namespace {controlplane.NAMESPACE}", RBAC_URL)

    def _may_create(self, api_version: str, kind: str, namespace: str | None) -> bool:
        assert self.client is not None
        attributes = {"verb": "create", "group": _group(api_version), "resource": _plural(kind)}
        if namespace:
            attributes["namespace"] = namespace
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attributes}}
        answer = self.client.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
        status = answer.body.get("status")
        return answer.status in (200, 201) and isinstance(status, dict) and status.get("allowed") is True

    def crds(self) -> Iterator[Result]:
        assert self.client is not None
        title = "existing CustomResourceDefinitions are compatible"
        answer = self.client.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        if answer.status != 200 or not isinstance(answer.body.get("items"), list):
            yield fail("crds", title, f"cannot list CustomResourceDefinitions: {answer.message}", RBAC_URL)
            return
        existing = {item.get("metadata", {}).get("name"): item
                    for item in answer.body["items"] if isinstance(item, dict)}
        conflicts, foreign = [], []
        for kind in crds.KINDS:
            found = existing.get(kind.name)
            if found is None:
                continue
            problem = _crd_conflict(kind, found)
            if problem:
                conflicts.append(f"{kind.name}: {problem}")
            elif (found.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/part-of") != "meshproxy":
                foreign.append(kind.name)
        if conflicts:
            yield fail("crds", title, "; ".join(conflicts),
                       "these CRDs serve other versions or names than meshproxy reads: remove them first "
                       "(kubectl delete crd NAME) or keep them and do not use meshproxy's policies of that kind")
        elif foreign:
            yield warn("crds", title, f"installed by someone else (Linkerd?) and compatible: {', '.join(foreign)}",
                       "keep them: skip meshproxy install --crds, which would replace them")
        else:
            yield ok("crds", title, "")

    # ---- --proxy ------------------------------------------------------------------

    def pods(self) -> list[dict]:
        from proxy.inject import names

        assert self.client is not None
        ns = self.args.namespace
        path = f"/api/v1/namespaces/{ns}/pods" if ns else "/api/v1/pods"
        answer = self.client.get(path)
        if answer.status != 200 or not isinstance(answer.body.get("items"), list):
            raise kube.ApiUnavailable(f"GET {path} answered {answer.status}: {answer.message}")
        meshed = []
        for pod in answer.body["items"]:
            if not isinstance(pod, dict):
                raise TypeError(f"GET {path}: an item that is not an object")
            spec = pod.get("spec") or {}
            containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
            if any(c.get("name") == names.PROXY_CONTAINER for c in containers) and \
                    (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                meshed.append(pod)
        return meshed

    def data_plane(self) -> Iterator[Result]:
        title = "data plane proxies are ready"
        try:
            pods = self.pods()
        except kube.ApiUnavailable as err:
            yield fail("proxies-ready", title, str(err), RBAC_URL)
            return
        where = f"namespace {self.args.namespace}" if self.args.namespace else "the cluster"
        if not pods:
            yield fail("proxies-ready", title, f"no meshed pods in {where}",
                       "kubectl get deploy -o yaml | meshproxy inject - | kubectl apply -f -")
            return
        unready = [_name(p) for p in pods if not _proxy_ready(p)]
        if unready:
            yield fail("proxies-ready", title, f"proxy not ready in {', '.join(unready)}",
                       "kubectl logs POD -c meshproxy; kubectl describe pod POD")
        else:
            yield ok("proxies-ready", title, f"{len(pods)} meshed pod{'s' if len(pods) != 1 else ''}")
        ready = [p for p in pods if _proxy_ready(p)]
        yield self._certificates(ready)
        yield self._trust_anchors(pods)
        yield _versions(pods)

    def _trust_anchors(self, pods: list[dict]) -> Result:
        """The anchors each meshed namespace mounts are the control plane's (a re-install makes new ones)."""
        from proxy.inject import names
        from proxy.install import controlplane

        assert self.client is not None
        title = "data plane trust anchors match the control plane's"
        namespaces = sorted({str((p.get("metadata") or {}).get("namespace")) for p in pods if _has_identity(p)})
        if not namespaces:
            return skip("trust-anchors", title, "no proxies with identity")

        client = self.client

        def anchors(ns: str) -> str | None:
            answer = client.get(f"/api/v1/namespaces/{ns}/configmaps/{names.TRUST_ANCHORS_CONFIGMAP}")
            if answer.status != 200:
                return None
            return str((answer.body.get("data") or {}).get(names.TRUST_ANCHORS_KEY) or "")

        want = anchors(controlplane.NAMESPACE)
        fix = (f"copy them: kubectl -n {controlplane.NAMESPACE} get configmap {names.TRUST_ANCHORS_CONFIGMAP} "
               "-o yaml, change its namespace to NS, kubectl apply; then restart NS's meshed pods")
        if want is None:
            return warn("trust-anchors", title,
                        f"no {controlplane.NAMESPACE}/{names.TRUST_ANCHORS_CONFIGMAP}: cannot compare",
                        "is the control plane installed? meshproxy check --pre, then meshproxy install")
        found = {ns: anchors(ns) for ns in namespaces}
        missing = [ns for ns, pem in found.items() if pem is None]
        different = [ns for ns, pem in found.items() if pem is not None and pem != want]
        if missing or different:
            text = "; ".join(part for part in (
                f"missing in {', '.join(missing)} (its pods cannot start)" if missing else "",
                f"different in {', '.join(different)}" if different else "") if part)
            return fail("trust-anchors", title, text, fix)
        return ok("trust-anchors", title, ", ".join(namespaces))

    def _certificates(self, pods: list[dict]) -> Result:
        from proxy.check.proxy_state import CERT_EXPIRY_METRIC, left
        from proxy.telemetry.scrape import parse_prometheus

        assert self.client is not None
        title = "data plane proxies certificates are valid for at least a day"
        problems, checked, plaintext = [], 0, 0
        now = time.time()
        for pod in pods:
            container = _proxy_container(pod)
            if not _has_identity(pod):
                plaintext += 1  # injected without identity: no certificate to check
                continue
            meta = pod.get("metadata") or {}
            path = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}:{_admin_port(container)}" \
                   "/proxy/metrics"
            try:
                status, body = self.client.raw("GET", path)
            except kube.ApiUnavailable as err:
                problems.append(f"{_name(pod)}: {err}")
                continue
            if status != 200:
                problems.append(f"{_name(pod)}: its metrics through the API answered {status}")
                continue
            values = [v for n, _, v in parse_prometheus(body.decode("utf-8", "replace")) if n == CERT_EXPIRY_METRIC]
            checked += 1
            if not values:
                problems.append(f"{_name(pod)}: holds no certificate")
            elif min(values) <= now:
                problems.append(f"{_name(pod)}: certificate expired")
            elif min(values) - now < CERT_MIN_LEFT:
                problems.append(f"{_name(pod)}: certificate expires in {left(min(values) - now)}")
        if problems:
            return fail("proxies-certificates", title, "; ".join(problems),
                        "see the proxy's log (kubectl logs POD -c meshproxy) and meshproxy-identity's; "
                        "reading metrics through the API needs get on pods/proxy")
        if not checked:
            return skip("proxies-certificates", title, f"{plaintext} proxies without identity")
        return ok("proxies-certificates", title, f"{checked} checked")


def _name(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _proxy_container(pod: dict) -> dict:
    from proxy.inject import names

    spec = pod.get("spec") or {}
    return next(c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
                if c.get("name") == names.PROXY_CONTAINER)


def _has_identity(pod: dict) -> bool:
    from proxy import config

    return any(e.get("name") == config.IDENTITY_NAME for e in _proxy_container(pod).get("env") or [])


def _admin_port(container: dict) -> int:
    from proxy.inject import names

    for port in container.get("ports") or []:
        if port.get("name") == names.ADMIN_PORT_NAME:
            return int(port.get("containerPort") or names.ADMIN_PORT)
    return names.ADMIN_PORT


def _proxy_ready(pod: dict) -> bool:
    from proxy.inject import names

    status = pod.get("status") or {}
    for item in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if item.get("name") == names.PROXY_CONTAINER:
            return item.get("ready") is True
    return False


def _versions(pods: list[dict]) -> Result:
    """The proxy's version: the annotation inject writes, else the image's tag."""
    from proxy.inject import names

    title = "data plane and cli versions match"
    skewed = []
    for pod in pods:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        version = annotations.get(names.PROXY_VERSION) or str(_proxy_container(pod).get("image", "")).rpartition(":")[2]
        if version != proxy.__version__:
            skewed.append(f"{_name(pod)} runs {version or 'an unknown version'}")
    if skewed:
        return warn("proxies-version", title, f"the CLI is {proxy.__version__}; " + ", ".join(skewed),
                    "kubectl rollout restart deploy -n NAMESPACE (the injector injects the current proxy)")
    return ok("proxies-version", title, proxy.__version__)


def _crd_conflict(kind: crds.Kind, found: dict) -> str:
    spec = found.get("spec") or {}
    names = spec.get("names") or {}
    if spec.get("group") != kind.group or names.get("kind") != kind.kind or spec.get("scope") != "Namespaced":
        return f"is {names.get('kind')} of {spec.get('group')} ({spec.get('scope')})"
    served = {v.get("name") for v in spec.get("versions") or [] if v.get("served")}
    missing = [v for v in kind.versions if v not in served]
    return f"does not serve {', '.join(missing)}" if missing else ""


def run(args: argparse.Namespace) -> list[Section]:
    checker = Checker(args)
    plan: list[tuple[str, Callable[[], Iterator[Result]]]] = [("kubernetes-api", checker.api)]
    if args.pre:
        plan += [("kubernetes-version", checker.version_check), ("pre-kubernetes-setup", checker.setup),
                 ("pre-meshproxy-crds", checker.crds)]
    if args.proxy:
        plan += [("meshproxy-data-plane", checker.data_plane)]
    sections: list[Section] = []
    for name, step in plan:
        results: list[Result] = []
        sections.append((name, results))
        try:
            for result in step():
                results.append(result)
        except Stop:
            break
        except kube.ApiUnavailable as err:
            results.append(fail(name, "the Kubernetes API answers", str(err), "check the API server and network"))
            break
        except (AttributeError, TypeError, ValueError, KeyError) as err:
            # An object without the shape the API documents (a proxy in between, another server): one line.
            results.append(fail(name, "the Kubernetes API answers as documented",
                                f"an answer without the documented shape ({type(err).__name__}: {err})",
                                "is --api a Kubernetes API server (or kubectl proxy)?"))
            break
        if any(r.status == FAIL for r in results) and name == "kubernetes-api":
            break
    return sections
