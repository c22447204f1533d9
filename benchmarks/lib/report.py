"""Tables and reports: one result model, rendered as plain text, Markdown and JSON.

A scenario returns a ``ScenarioResult`` (tables for people, ``data`` for
machines); ``Report`` adds the machine and the parameters and writes the
three forms. Cells are strings already formatted by the scenario, so the
renderers only lay them out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    # Columns whose cells are right-aligned (numbers); by header name.
    numeric: set[str] = field(default_factory=set)


@dataclass
class ScenarioResult:
    name: str
    description: str
    params: dict[str, Any]
    tables: list[Table]
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    title: str
    machine: dict[str, str]
    params: dict[str, Any]
    scenarios: list[ScenarioResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "title": self.title,
            "machine": self.machine,
            "parameters": self.params,
            "scenarios": {
                s.name: {
                    "description": s.description,
                    "parameters": s.params,
                    "results": s.data,
                    "notes": s.notes,
                    "tables": [asdict(t) | {"numeric": sorted(t.numeric)} for t in s.tables],
                }
                for s in self.scenarios
            },
            "errors": self.errors,
        }


# ---- plain text ------------------------------------------------------------------


def table_text(table: Table) -> str:
    widths = [len(h) for h in table.headers]
    for row in table.rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            right = table.headers[i] in table.numeric
            parts.append(cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    out = [table.title, "-" * len(table.title), line(table.headers)]
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in table.rows)
    out.extend(f"  * {note}" for note in table.notes)
    return "\n".join(out)


def report_text(report: Report, machine_lines: bool = True) -> str:
    out = [f"== {report.title} =="]
    if machine_lines:
        m = report.machine
        python = m["python"].split()[1]
        out.append(f"{m['date']} | {m['cpu_model']} x{m['cpus_online']} | {m['kernel']} | Python {python}")
    for scenario in report.scenarios:
        out.append("")
        out.append(f"## {scenario.name}: {scenario.description}")
        for note in scenario.notes:
            out.append(f"  * {note}")
        for table in scenario.tables:
            out.append("")
            out.append(table_text(table))
    for err in report.errors:
        out.append(f"ERROR: {err}")
    return "\n".join(out)


# ---- Markdown ----------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


def table_markdown(table: Table) -> str:
    out = [f"#### {table.title}", ""]
    out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    out.append("|" + "|".join("---:" if h in table.numeric else "---" for h in table.headers) + "|")
    for row in table.rows:
        out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if table.notes:
        out.append("")
        out.extend(f"- {note}" for note in table.notes)
    return "\n".join(out)


def report_markdown(report: Report) -> str:
    out = [f"# {report.title}", ""]
    out.append("## Machine")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    out.extend(f"| {k} | {_md_cell(str(v))} |" for k, v in report.machine.items())
    out.append("")
    out.append("## Parameters")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    out.extend(f"| {k} | {_md_cell(_flat(v))} |" for k, v in report.params.items())
    for scenario in report.scenarios:
        out.append("")
        out.append(f"## Scenario `{scenario.name}`: {scenario.description}")
        out.append("")
        if scenario.params:
            out.append(
                "Parameters: " + ", ".join(f"{k} = `{_flat(v)}`" for k, v in scenario.params.items())
            )
            out.append("")
        out.extend(f"- {note}" for note in scenario.notes)
        for table in scenario.tables:
            out.append("")
            out.append(table_markdown(table))
    if report.errors:
        out.append("")
        out.append("## Errors")
        out.append("")
        out.extend(f"- {err}" for err in report.errors)
    return "\n".join(out) + "\n"


def _flat(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def write(report: Report, out_dir: Path, stamp: str) -> list[Path]:
    """``bench-<stamp>.{md,json}`` plus ``latest.{md,json}`` copies; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = report_markdown(report)
    js = json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n"
    paths = []
    for name, text in (
        (f"bench-{stamp}.md", md),
        (f"bench-{stamp}.json", js),
        ("latest.md", md),
        ("latest.json", js),
    ):
        path = out_dir / name
        path.write_text(text)
        paths.append(path)
    return paths
