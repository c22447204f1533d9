"""proxy/inject/admission.py without a server: hostile review bodies, the JSONPatch diff, owners."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.inject import Options, admission
from tests.inject.manifests import JSON
from tests.inject.reviews import kind_review

jsonpatch = pytest.importorskip("jsonpatch")



def test_every_prefix_of_a_real_review_is_refused_cleanly() -> None:
    body = json.dumps(kind_review("Deployment", "shop")).encode()
    for end in range(len(body)):
        with pytest.raises(admission.ReviewError):
            admission.parse(body[:end])
    assert admission.parse(body).pod is not None


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_body_parses_or_is_refused(doc: object) -> None:
    try:
        admission.parse(json.dumps(doc).encode())
    except admission.ReviewError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["metadata", "spec", "kind", "apiVersion"]), JSON, max_size=4),
       st.dictionaries(st.sampled_from(["containers", "initContainers", "volumes", "hostNetwork"]), JSON,
                       max_size=4))
def test_any_pod_object_gives_a_mutation(pod: dict, spec: dict) -> None:
    """Whatever the pod looks like, mutate answers (a patch, a skip or a failure), never raises."""
    for candidate in (pod, {**pod, "spec": spec}, {**pod, "spec": {**spec, "containers": [{"name": "a"}]}},
                      {**pod, "spec": {**spec, "containers": [{"name": v} for v in spec.values()]}}):
        doc = kind_review("Pod", "shop")
        doc["request"]["object"] = candidate
        review = admission.parse(json.dumps(doc).encode())
        if review.pod is None:
            continue
        before = copy.deepcopy(review.pod)
        mutation = admission.mutate(review, {"linkerd.io/inject": "enabled"}, Options(unannotated=False))
        assert mutation.result in ("injected", "skipped", "error")
        if mutation.patch:
            assert jsonpatch.apply_patch(before, mutation.patch) == review.pod


@settings(max_examples=300, deadline=None)
@given(JSON, JSON)
def test_json_patch_turns_before_into_after(before: object, after: object) -> None:
    document = {"a": before}
    assert jsonpatch.apply_patch(document, admission.json_patch(document, {"a": after})) == {"a": after}


def test_json_patch_escapes_keys_and_removes() -> None:
    before = {"metadata": {"annotations": {"a/b": "1", "c~d": "2", "gone": "3"}}}
    after = {"metadata": {"annotations": {"a/b": "9", "c~d": "2", "new/key~": "4"}}}
    ops = admission.json_patch(before, after)
    assert ops == [
        {"op": "remove", "path": "/metadata/annotations/gone"},
        {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "9"},
        {"op": "add", "path": "/metadata/annotations/new~1key~0", "value": "4"},
    ]
    assert jsonpatch.apply_patch(before, ops) == after


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"generateName": "web-5d8f7c9b4-", "labels": {"pod-template-hash": "5d8f7c9b4"},
      "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d8f7c9b4", "controller": True}]},
     ("Deployment", "web")),
    ({"generateName": "rs-", "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]},
     ("ReplicaSet", "rs")),
    ({"name": "db-0", "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}]},
     ("StatefulSet", "db")),
    ({"name": "db-0", "ownerReferences": [{"kind": "StatefulSet", "name": "db"}]}, ("Pod", "db-0")),
    ({"name": "x", "ownerReferences": [{"kind": "SomeOperator", "name": "op", "controller": True}]}, ("Pod", "x")),
    ({"generateName": "bare-"}, ("Pod", "bare")),
    ({}, ("Pod", "?")),
])
def test_owner(metadata: dict, expected: tuple[str, str]) -> None:
    assert admission.owner({"metadata": metadata}) == expected


def test_response_shape() -> None:
    answer = admission.response("u-1", [{"op": "add", "path": "/x", "value": 1}], "careful")
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "u-1" and answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch" and answer["response"]["warnings"] == ["careful"]
    assert admission.response("u-2")["response"] == {"uid": "u-2", "allowed": True}
