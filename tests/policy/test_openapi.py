"""``meshproxy profile --open-api``: OpenAPI (JSON and YAML) to a ServiceProfile that parses back."""

from __future__ import annotations

import json

import yaml

from proxy.policy.openapi import main, path_regex
from proxy.policy.parse import parse
from proxy.policy.routes import match

SPEC = {
    "openapi": "3.0.0",
    "info": {"title": "books", "version": "1"},
    "paths": {
        "/books": {"get": {"responses": {}}, "post": {"responses": {}, "x-linkerd-retryable": True}},
        "/books/{id}": {"get": {"responses": {}, "x-linkerd-timeout": "250ms"}, "parameters": []},
        "/books/{id}/cover.png": {"delete": {"responses": {}}},
    },
}


def test_path_regex_escapes_literals():
    assert path_regex("/books/{id}") == "/books/[^/]*"
    assert path_regex("/a.b/{x}/c+d") == "/a\\.b/[^/]*/c\\+d"


def run(tmp_path, capsys, name, text):
    spec = tmp_path / name
    spec.write_text(text)
    assert main(["--open-api", str(spec), "books.shop.svc.cluster.local"]) == 0
    return capsys.readouterr().out


def check(out: str) -> None:
    doc = yaml.safe_load(out)
    assert doc["kind"] == "ServiceProfile" and doc["apiVersion"] == "linkerd.io/v1alpha2"
    assert doc["metadata"] == {"name": "books.shop.svc.cluster.local", "namespace": "shop"}
    names = [r["name"] for r in doc["spec"]["routes"]]
    assert names == ["GET /books", "POST /books", "GET /books/{id}", "DELETE /books/{id}/cover.png"]
    p = parse(out).get("books.shop.svc.cluster.local")
    assert match(p, b"GET", b"/books/7").name == "GET /books/{id}"
    assert match(p, b"GET", b"/books/7").timeout == 0.25
    assert match(p, b"POST", b"/books").is_retryable
    assert match(p, b"DELETE", b"/books/7/cover.png").name == "DELETE /books/{id}/cover.png"
    assert match(p, b"DELETE", b"/books/7/coverXpng") is None
    assert match(p, b"GET", b"/books/7/8") is None


def test_json_spec(tmp_path, capsys):
    check(run(tmp_path, capsys, "spec.json", json.dumps(SPEC)))


def test_yaml_spec_with_swagger_base_path(tmp_path, capsys):
    swagger = {"swagger": "2.0", "basePath": "/api", "paths": {"/x/{id}": {"get": {}}}}
    out = run(tmp_path, capsys, "spec.yaml", yaml.safe_dump(swagger))
    assert yaml.safe_load(out)["spec"]["routes"] == [
        {"name": "GET /api/x/{id}", "condition": {"method": "GET", "pathRegex": "/api/x/[^/]*"}}]
    check(run(tmp_path, capsys, "spec2.yaml", yaml.safe_dump(SPEC)))


def test_errors(tmp_path, capsys):
    assert main(["--open-api", str(tmp_path / "missing.json"), "s"]) == 66
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["--open-api", str(bad), "s"]) == 65
    assert "paths" in capsys.readouterr().err
