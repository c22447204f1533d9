"""One check's outcome and the two ways of printing a list of them; and, for the
cluster checks (``check --pre``, ``--proxy``), Linkerd's way: sections with a
heading, ``√``/``×``/``‼`` lines, a hint under each problem, and Linkerd's JSON
shape (``success``, ``categories[].checks[]`` with ``result``)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import TextIO

OK, FAIL, SKIP, WARN = "ok", "fail", "skip", "warn"


@dataclass(frozen=True, slots=True)
class Result:
    """``status`` is ok, fail, skip (not applicable here: not a failure) or warn (a problem that does not fail)."""

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


def warn(check: str, title: str, message: str, hint: str) -> Result:
    return Result(check, title, WARN, message, hint)


def _utf8(stream: TextIO) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return encoding in ("utf8", "utf_8")


def _marks(stream: TextIO) -> dict[str, str]:
    if _utf8(stream):
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


# ---- sections, as linkerd check prints them --------------------------------------

Section = tuple[str, list[Result]]
# Linkerd's marks; without UTF-8, words.
_SECTION_MARKS = {OK: "√", FAIL: "×", WARN: "‼", SKIP: "-"}
_SECTION_WORDS = {OK: "[ok]", FAIL: "[fail]", WARN: "[warn]", SKIP: "[skip]"}
_LINKERD_RESULT = {OK: "success", FAIL: "error", WARN: "warning", SKIP: "skipped"}


def sections_ok(sections: list[Section]) -> bool:
    return not any(r.status == FAIL for _, results in sections for r in results)


def render_sections_text(sections: list[Section], stream: TextIO = sys.stdout) -> None:
    marks = _SECTION_MARKS if _utf8(stream) else _SECTION_WORDS
    for name, results in sections:
        print(f"{name}\n{'-' * len(name)}", file=stream)
        for result in results:
            print(f"{marks[result.status]} {result.title}", file=stream)
            if result.status in (FAIL, WARN):
                for line in (result.message, f"see {result.hint} for hints" if result.hint.startswith("http")
                             else result.hint):
                    if line:
                        print(f"    {line}", file=stream)
        print(file=stream)
    print(f"Status check results are {marks[OK] if sections_ok(sections) else marks[FAIL]}", file=stream)


def render_sections_json(sections: list[Section], stream: TextIO = sys.stdout) -> None:
    categories = []
    for name, results in sections:
        checks = []
        for r in results:
            entry = {"description": r.title, "result": _LINKERD_RESULT[r.status]}
            if r.status in (FAIL, WARN):
                entry.update(error=r.message, hint=r.hint)
            elif r.message:
                entry["message"] = r.message
            checks.append(entry)
        categories.append({"categoryName": name, "checks": checks})
    json.dump({"success": sections_ok(sections), "categories": categories}, stream, indent=2, ensure_ascii=False)
    stream.write("\n")
