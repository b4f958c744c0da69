"""Runs launch commands, or only prints them (--dry_run): the one place that executes."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence


def run(command: Sequence[str], dry_run: bool) -> None:
  """Prints `command` as a shell line, then runs it unless dry_run (output streams through)."""
  print(shlex.join(command), flush=True)
  if not dry_run:
    subprocess.run(command, check=True)


def main_flags(config: str, workdir: str, extra: Sequence[str]) -> list[str]:
  """The byteflax.main arguments every worker gets, besides the distributed ones."""
  if not config or not workdir:
    raise ValueError("--config and --workdir are required.")
  return [f"--config={config}", f"--workdir={workdir}", *extra]
