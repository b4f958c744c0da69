r"""Trains byteflax with one process per GPU, on one machine or several (over ssh).

  python -m launch.gpu --gpus_per_host=8 --config=configs/byteqrnn_toxicity.py \
      --workdir=/shared/run [--hosts=node1,node2] [--dry_run] [-- --config.x=y]

Process i (of hosts x gpus_per_host) runs `python -m byteflax.main --distributed` with
--coordinator_address=<first host>:<port> --num_processes --process_id and sees only its
GPU (CUDA_VISIBLE_DEVICES). Hosts other than localhost are reached with `ssh HOST 'cd
--code_dir && ...'` (the code and the venv must already be there, and --workdir shared by
all hosts). Output streams here, each line prefixed with its process id; if one process
fails, the others are stopped. Arguments after `--` go to every process.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Sequence

from absl import app
from absl import flags

from launch import shell

_HOSTS = flags.DEFINE_list("hosts", ["localhost"], "Machines; the first one coordinates.")
_GPUS_PER_HOST = flags.DEFINE_integer("gpus_per_host", None, "Processes (GPUs) per host.")
_PORT = flags.DEFINE_integer("coordinator_port", 12355, "Coordinator port on the first host.")
_CODE_DIR = flags.DEFINE_string("code_dir", os.getcwd(), "Repository path on every host.")
_PYTHON = flags.DEFINE_string("python", "python", "Python on every host (e.g. a venv's).")
_CONFIG = flags.DEFINE_string("config", None, "byteflax config, e.g. configs/x.py:variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir shared by all hosts.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print every command without running it.")


def commands(extra: Sequence[str]) -> list[list[str]]:
  """One command per process, in process-id order."""
  if not _GPUS_PER_HOST.value or _GPUS_PER_HOST.value < 1:
    raise ValueError("--gpus_per_host must be a positive number of GPUs.")
  if len(_HOSTS.value) > 1 and "localhost" in _HOSTS.value:
    raise ValueError("With several --hosts, name each by an address the others can reach "
                     "(not localhost): the first one is the coordinator.")
  main_flags = shell.main_flags(_CONFIG.value, _WORKDIR.value, extra)
  num_processes = len(_HOSTS.value) * _GPUS_PER_HOST.value
  coordinator = f"{_HOSTS.value[0]}:{_PORT.value}"
  result = []
  for host_index, host in enumerate(_HOSTS.value):
    for gpu in range(_GPUS_PER_HOST.value):
      process = [
          "env", f"CUDA_VISIBLE_DEVICES={gpu}", _PYTHON.value, "-m", "byteflax.main",
          "--distributed", f"--coordinator_address={coordinator}",
          f"--num_processes={num_processes}",
          f"--process_id={host_index * _GPUS_PER_HOST.value + gpu}", *main_flags]
      if host != "localhost":
        process = ["ssh", host, f"cd {shlex.quote(_CODE_DIR.value)} && "
                   + shlex.join(process)]
      result.append(process)
  return result


def _stream(process_id: int, stream) -> None:
  for line in stream:
    sys.stdout.write(f"[{process_id}] {line}")
  sys.stdout.flush()


def run_all(processes: Sequence[Sequence[str]]) -> int:
  """Starts every process, streams their output, returns the first failing exit code."""
  running = [subprocess.Popen(p, cwd=_CODE_DIR.value, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for p in processes]
  readers = [threading.Thread(target=_stream, args=(i, p.stdout), daemon=True)
             for i, p in enumerate(running)]
  for reader in readers:
    reader.start()
  failed = 0
  try:
    for process in running:
      # A collective waits forever for a dead peer, so one failure stops the others.
      if process.wait() and not failed:
        failed = process.returncode
        for other in running:
          other.terminate()
  finally:
    for process in running:
      if process.poll() is None:
        process.terminate()
  for reader in readers:
    reader.join()
  return failed


def main(argv):
  try:
    processes = commands(argv[1:])
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  for process in processes:
    print(shlex.join(process), flush=True)
  if not _DRY_RUN.value:
    sys.exit(run_all(processes))


if __name__ == "__main__":
  app.run(main)
