"""Walk a multi-document YAML stream, injecting (or uninjecting) each document.

The stream is cut at its ``---`` lines (YAML forbids a document marker in
column 0 inside a document, so this cut is the parser's own) and each piece is
parsed alone, which gives every document an index for messages and lets an
unchanged document be written back byte for byte. A changed document is
re-serialised with its keys in their original order; comments in it are lost.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from proxy.inject import names, podspec, policy, probes, workloads

_DOC_START = re.compile(r"^---(?=[ \t]|$)", re.MULTILINE)


class InjectError(ValueError):
    """A document injection cannot handle; ``index`` counts documents from 1."""

    def __init__(self, index: int, kind: str | None, why: str) -> None:
        super().__init__(f"document {index} (kind {kind or 'unknown'}): {why}")
        self.index = index
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Options:
    proxy_image: str = names.DEFAULT_PROXY_IMAGE
    init_image: str = names.DEFAULT_INIT_IMAGE
    # True: add the containers (``inject --manual``, the webhook); False: only
    # annotate the pod template for the webhook (``inject``, as linkerd inject).
    manual: bool = True
    # Inject pods no level annotates (the command does, as linkerd inject; the
    # webhook does not: it acts on annotated namespaces and pods only).
    unannotated: bool = True
    # Annotations of the namespace the manifests go to, when no Namespace
    # document in the stream names it.
    namespace_annotations: Mapping[str, str] = field(default_factory=dict)
    # Namespace name -> annotations, from Namespace documents given beside the stream.
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Identity flags; the annotations of each pod may override them.
    identity: policy.IdentityDefaults = policy.IdentityDefaults()


@dataclass(slots=True)
class Result:
    text: str
    report: list[str]  # one line per workload (or document), for stderr
    changed: int  # pods injected / uninjected


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one pod: ``action`` injected, annotated, unchanged or skipped; ``reason`` a short code."""

    action: str
    reason: str
    line: str  # for the report


@dataclass(slots=True)
class _Piece:
    raw: str
    marker: str  # the '---' line that opened it, '' for text before the first one
    is_document: bool


def split(text: str) -> list[_Piece]:
    """Cut a stream into pieces; comments/blank text before the first marker is not a document."""
    starts = [m.start() for m in _DOC_START.finditer(text)]
    if not starts:
        return [_Piece(text, "", True)]
    pieces = []
    if starts[0] > 0:
        head = text[: starts[0]]
        try:
            is_document = yaml.safe_load(head) is not None
        except yaml.YAMLError:
            is_document = True  # reported as invalid YAML, document 1
        pieces.append(_Piece(head, "", is_document))
    for lo, hi in zip(starts, starts[1:] + [len(text)]):
        raw = text[lo:hi]
        line_end = raw.find("\n")
        pieces.append(_Piece(raw, raw if line_end < 0 else raw[: line_end + 1], True))
    return pieces


def _dump(doc: Any, marker: str) -> str:
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)
    # Keep a bare '---' line; a marker carrying content (`--- |`) is replaced.
    head = marker if marker.strip() == "---" else ("---\n" if marker else "")
    return head + body


def describe(site: workloads.PodSite) -> str:
    """As linkerd inject names a workload: ``deployment "web"``."""
    return f'{site.kind.lower()} "{site.name}"'


def _kind(doc: Any) -> str | None:
    return str(doc.get("kind")) if isinstance(doc, dict) and doc.get("kind") is not None else None


def _parse(pieces: list[_Piece]) -> list[Any]:
    docs: list[Any] = []
    index = 0
    for piece in pieces:
        if not piece.is_document:
            docs.append(None)
            continue
        index += 1
        try:
            docs.append(yaml.safe_load(piece.raw))
        except yaml.YAMLError as err:
            raise InjectError(index, None, f"invalid YAML: {err}") from None
    return docs


def _namespaces(docs: list[Any], options: Options) -> dict[str, Mapping[str, str]]:
    found = dict(options.namespaces)
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "Namespace":
            metadata = doc.get("metadata") or {}
            if isinstance(metadata, dict) and metadata.get("name"):
                found[str(metadata["name"])] = metadata.get("annotations") or {}
    return found


def _transform(text: str, options: Options, uninject: bool) -> Result:
    pieces = split(text)
    docs = _parse(pieces)
    namespaces = _namespaces(docs, options)
    out: list[str] = []
    report: list[str] = []
    changed = 0
    index = 0
    for piece, doc in zip(pieces, docs):
        if not piece.is_document:
            out.append(piece.raw)
            continue
        index += 1
        kind = _kind(doc)
        if doc is None:
            out.append(piece.raw)
            continue
        if not isinstance(doc, dict):
            raise InjectError(index, None, f"a Kubernetes document is a mapping, not a {type(doc).__name__}")
        new = copy.deepcopy(doc)
        try:
            sites = list(workloads.sites(new))
        except workloads.UnsupportedShape as err:
            raise InjectError(index, kind, f"unsupported document shape: {err}") from None
        for site in sites:
            before = copy.deepcopy(site.template)
            try:
                if uninject:
                    line = _uninject_site(site)
                else:
                    line = inject_site(site, options, _namespace_annotations(site, options, namespaces)).line
            except policy.AnnotationError as err:
                raise InjectError(index, kind, f"{describe(site)}: {err}") from None
            except podspec.ShapeError as err:  # names the workload itself
                raise InjectError(index, kind, str(err)) from None
            if site.template != before:
                changed += 1
            report.append(f"{describe(site)} {line}")
        out.append(piece.raw if new == doc else _dump(new, piece.marker))
    result = "".join(out)
    if result and not result.endswith("\n"):
        result += "\n"
    return Result(result, report, changed)


def _namespace_annotations(site: workloads.PodSite, options: Options,
                           namespaces: Mapping[str, Mapping[str, str]]) -> Mapping[str, str]:
    if site.namespace is not None and site.namespace in namespaces:
        return namespaces[site.namespace]
    return options.namespace_annotations


def inject_site(site: workloads.PodSite, options: Options, ns_annotations: Mapping[str, str]) -> Outcome:
    """Inject (or annotate) one pod in place; raises AnnotationError or ShapeError."""
    pod_annotations = (site.template.get("metadata") or {}).get("annotations") or {}
    found = policy.Annotations(pod_annotations, site.owner_annotations, ns_annotations or {})
    decision = found.decide(options.unannotated)
    was_injected = podspec.is_injected(site.template)
    if not decision.inject:
        reason = "not_annotated" if found.get(names.INJECT) is None else "disabled"
        return Outcome("skipped", reason, f"skipped: {decision.why}"
                       + (" (left as it was, already injected)" if was_injected else ""))
    if site.spec.get("hostNetwork") is True:
        return Outcome("skipped", "host_network",
                       "skipped: hostNetwork: true (the pod shares the node's network namespace; "
                       "iptables rules there would capture the node's traffic)")
    probe_paths = probes.find(site.spec, skip=podspec.OURS)
    # Every annotation is checked in both modes, so a bad value fails here and not in the webhook.
    settings = found.settings(options.proxy_image, options.init_image, options.identity, probe_paths.value)
    settings = replace(settings, workload_kind=site.kind.lower(), workload_name=site.name)
    ignored = found.ignored()
    if not options.manual:
        return _annotate(site, was_injected, ignored)
    if was_injected:
        # Re-inject from scratch, so a changed setting is picked up and an
        # unchanged one gives byte-identical output.
        before = copy.deepcopy(site.template)
        podspec.remove(site.template, site.spec)
        podspec.add(site.template, site.spec, settings, describe(site))
        if site.template == before:
            return Outcome("unchanged", "already_injected", "already injected, unchanged")
    else:
        podspec.add(site.template, site.spec, settings, describe(site))
    verb = "re-injected" if was_injected else "injected"
    notes = [decision.why, f"proxy {settings.proxy_image}", f"init {settings.init_image}",
             *_notes(settings, probe_paths)]
    if ignored:
        notes.append("ignored (no meshproxy setting): " + ", ".join(ignored))
    return Outcome("injected", "injected", f"{verb} ({'; '.join(notes)})")


def _annotate(site: workloads.PodSite, was_injected: bool, ignored: list[str]) -> Outcome:
    """Mark the pod template for the webhook, carrying the workload's own annotations down to it.

    The webhook sees the pod and its namespace, never the workload, so an
    annotation only the workload carries is copied to the template.
    """
    if was_injected:
        return Outcome("unchanged", "already_injected",
                       f"already injected ({names.INJECTED}), unchanged; --manual re-injects it")
    metadata = site.template.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise podspec.ShapeError(f"{describe(site)}: metadata is not a mapping")
    if metadata.get("annotations") is None:
        metadata["annotations"] = {}
    annotations = metadata["annotations"]
    if not isinstance(annotations, dict):
        raise podspec.ShapeError(f"{describe(site)}: metadata.annotations is not a mapping")
    pod_level = policy.Annotations(annotations, {}, {})
    for key, value in site.owner_annotations.items():
        ours = names.LINKERD.get(key, key)
        if ours in names.ALIASES or key.startswith("config.meshproxy.io/"):
            if pod_level.get(ours) is None:
                annotations[key] = value
    inject = pod_level.get(names.INJECT)
    if inject is None:
        annotations[names.INJECT] = names.ENABLED
    spelt = f"{names.INJECT}: {names.ENABLED}" if inject is None else f"{inject.name}: {inject.value}"
    notes = [f"{spelt} on the pod template, for the meshproxy injector"]
    if ignored:
        notes.append("ignored (no meshproxy setting): " + ", ".join(ignored))
    return Outcome("annotated", "annotated", f"injected ({'; '.join(notes)})")


def _notes(settings: policy.PodSettings, probe_paths: probes.ProbePaths) -> list[str]:
    notes = []
    if settings.identity is None:
        notes.append("identity off")
    elif settings.identity.trust_domain != names.DEFAULT_TRUST_DOMAIN:
        notes.append(f"trust domain {settings.identity.trust_domain}")
    if settings.default_policy:
        notes.append(f"default inbound policy {settings.default_policy}")
        if settings.identity is None and settings.default_policy.endswith("-authenticated"):
            notes.append("warning: without identity no client can authenticate, so only probes are admitted")
    if probe_paths.paths:
        notes.append(f"probe paths {probe_paths.value}")
    # Under the default all-unauthenticated these probes pass anyway.
    if probe_paths.uncovered and settings.default_policy not in (None, "all-unauthenticated"):
        notes.append("warning: probes the proxy cannot admit by path: " + ", ".join(probe_paths.uncovered))
    return notes


def _uninject_site(site: workloads.PodSite) -> str:
    if podspec.is_injected(site.template):
        podspec.remove(site.template, site.spec)
        return "uninjected"
    # Marked for the injector (by `inject`, or by hand): without the mark its
    # new pods are created without the proxy, unless the namespace asks for it.
    metadata = site.template.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict):
        return "not injected, unchanged"
    marks = [key for key in names.ALIASES[names.INJECT]
             if str(annotations.get(key, "")).strip() in (names.ENABLED, names.INGRESS)]
    if not marks:
        return "not injected, unchanged"
    for key in marks:
        del annotations[key]
    if not annotations and isinstance(metadata, dict):
        del metadata["annotations"]
    return f"uninjected (removed {', '.join(marks)}; its namespace's annotation, if any, still applies)"


def inject_text(text: str, options: Options | None = None) -> Result:
    return _transform(text, options or Options(), uninject=False)


def uninject_text(text: str) -> Result:
    return _transform(text, Options(), uninject=True)
