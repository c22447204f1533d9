"""One check's outcome and the two ways of printing a list of them."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import TextIO

OK, FAIL, SKIP = "ok", "fail", "skip"


@dataclass(frozen=True, slots=True)
class Result:
    """``status`` is ok, fail or skip (not applicable here: not a failure)."""

    check: str  # a stable id, e.g. "admin-ready"
    title: str  # what was checked, for people
    status: str
    message: str
    hint: str = ""


def ok(check: str, title: str, message: str) -> Result:
    return Result(check, title, OK, message)


def fail(check: str, title: str, message: str, hint: str) -> Result:
    return Result(check, title, FAIL, message, hint)


def skip(check: str, title: str, message: str) -> Result:
    return Result(check, title, SKIP, message)


def _marks(stream: TextIO) -> dict[str, str]:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    if encoding in ("utf8", "utf_8"):
        return {OK: "✔", FAIL: "✘", SKIP: "-"}
    return {OK: "[ok]", FAIL: "[fail]", SKIP: "[skip]"}


def render_text(results: list[Result], heading: str, stream: TextIO = sys.stdout) -> None:
    marks = _marks(stream)
    print(heading, file=stream)
    for result in results:
        print(f"{marks[result.status]} {result.title}: {result.message}", file=stream)
        if result.status == FAIL and result.hint:
            print(f"    hint: {result.hint}", file=stream)
    counts = {status: sum(r.status == status for r in results) for status in (OK, FAIL, SKIP)}
    print(f"{counts[OK]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped", file=stream)


def render_json(results: list[Result], stream: TextIO = sys.stdout) -> None:
    document = {"ok": not any(r.status == FAIL for r in results), "checks": [asdict(r) for r in results]}
    json.dump(document, stream, indent=2, ensure_ascii=False)
    stream.write("\n")
