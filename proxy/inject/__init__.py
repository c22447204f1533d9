"""Kubernetes injection: ``meshproxy inject``, ``uninject`` and the injector webhook.

``names`` spells the annotations and the init container's environment names,
``policy`` decides whether and how a pod is injected from its annotations,
``podspec`` adds and removes the two containers and their volumes,
``identity`` is what the proxy needs for its certificate, ``probes`` finds the
paths of the pod's HTTP probes, ``workloads`` finds pod templates inside
documents, ``stream`` walks a YAML stream and ``command`` is the subcommand;
``admission`` answers the API server's AdmissionReviews with the same code and
``injector`` is the webhook server (``meshproxy injector serve``).
"""

from __future__ import annotations

from proxy.inject.stream import InjectError, Options, Result, inject_text, uninject_text

__all__ = ["InjectError", "Options", "Result", "inject_text", "uninject_text"]
