"""What a scenario gets from the runner: options, directories, processes, CPU placement."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.lib.procs import ProcessGroup
from benchmarks.lib.servers import Placement


@dataclass
class Context:
    repo: Path          # the meshproxy checkout (cwd of meshproxy, import root)
    quick: bool         # --quick: fewer rounds, shorter loads
    run_dir: Path       # scratch directory for rendered configs (removed at exit)
    log_dir: Path       # server logs, kept beside the report
    group: ProcessGroup  # every started process; closed by the runner
    placement: Placement
    options: object     # the parsed command line, for scenario-specific overrides

    def run_seconds(self, quick: float, full: float = 10.0) -> float:
        """Seconds per measured run: ``--duration``, else the scenario's quick or full default."""
        return getattr(self.options, "duration", None) or (quick if self.quick else full)

    def round_count(self, full: int = 3) -> int:
        """Rounds per variant: ``--rounds``, else 1 with ``--quick`` and ``full`` otherwise."""
        return getattr(self.options, "rounds", None) or (1 if self.quick else full)

    def progress(self, message: str) -> None:
        """Progress goes to stderr so stdout carries only the final table."""
        say(f"  {message}")


def say(message: str) -> None:
    """A line on stderr; a closed stderr (``2>&1 | head``) must not stop a run."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass
