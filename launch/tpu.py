r"""Trains byteflax on a Cloud TPU VM or pod slice: create, copy + install, run, tear down.

  python -m launch.tpu --project=my-proj --zone=us-central2-b --accelerator_type=v4-32 \
      --name=byteflax-pod --config=configs/byteqrnn_toxicity.py --workdir=gs://bucket/run \
      [--dry_run] [-- --config.optim.learning_rate=1e-3]

Arguments after `--` go to every worker's `python -m byteflax.main`. Every worker runs the
same command with --distributed (JAX finds the pod's coordinator itself); `gcloud ... ssh
--worker=all` streams all workers' output here. The code shipped is `git archive HEAD`
(commit first). The workdir must be shared by all workers and outlive the VM (gs://):
orbax writes one checkpoint from all of them. The TPU VM is deleted at the end, also after a
failure or Ctrl-C, unless --keep (without which a workdir on the VM's disk is refused).
"""

from __future__ import annotations

import importlib.metadata
import shlex
from collections.abc import Sequence

from absl import app
from absl import flags

from launch import shell

_PROJECT = flags.DEFINE_string("project", None, "GCP project.")
_ZONE = flags.DEFINE_string("zone", None, "Zone with the TPU type, e.g. us-central2-b.")
_ACCELERATOR = flags.DEFINE_string("accelerator_type", "v4-8",
                                   "TPU type and size: v4-8 (one host), v4-32 (a pod slice).")
_NAME = flags.DEFINE_string("name", "byteflax", "TPU VM name.")
_RUNTIME = flags.DEFINE_string("runtime_version", "tpu-ubuntu2204-base",
                               "TPU software version (gcloud's --version).")
_SPOT = flags.DEFINE_bool("spot", False, "Spot capacity: cheaper, preemptible (the run "
                          "checkpoints on SIGTERM; launch again to resume).")
_CONFIG = flags.DEFINE_string("config", None, "byteflax config, e.g. configs/x.py:variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Shared workdir, e.g. gs://bucket/run.")
_KEEP = flags.DEFINE_bool("keep", False, "Leave the TPU VM running afterwards.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print every command without running it.")

_ARCHIVE = "byteflax.tar.gz"
_CODE_DIR = "byteflax"


def _gcloud_tpu(verb: str, *args: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args,
          f"--project={_PROJECT.value}", f"--zone={_ZONE.value}"]


def _on_all_workers(command: str) -> list[str]:
  return _gcloud_tpu("ssh", _NAME.value, "--worker=all", f"--command={command}")


def commands(extra: Sequence[str]) -> tuple[list[list[str]], list[str]]:
  """(setup and training commands in order, teardown command)."""
  if not _PROJECT.value or not _ZONE.value:
    raise ValueError("--project and --zone are required.")
  main_flags = shell.main_flags(_CONFIG.value, _WORKDIR.value, extra)
  if "://" not in _WORKDIR.value and not _KEEP.value:
    raise ValueError(
        f"--workdir={_WORKDIR.value} is on the TPU VM's own disk: the VM is deleted at the "
        "end, and with it the checkpoints and eval.json (and on a pod slice each worker "
        "would write its own). Pass a bucket, e.g. --workdir=gs://BUCKET/run, or --keep "
        "to leave a one-host VM up and read the run there.")
  jax_version = importlib.metadata.version("jax")  # Workers get the version tested here.
  create = _gcloud_tpu("create", _NAME.value, f"--accelerator-type={_ACCELERATOR.value}",
                       f"--version={_RUNTIME.value}", *(["--spot"] if _SPOT.value else []))
  install = (f"mkdir -p {_CODE_DIR} && tar -xzf {_ARCHIVE} -C {_CODE_DIR} && cd {_CODE_DIR}"
             f" && python3 -m pip install -q -e . 'jax[tpu]=={jax_version}'")
  train = (f"cd {_CODE_DIR} && python3 -m byteflax.main --distributed "
           + shlex.join(main_flags))
  return [
      create,
      ["git", "archive", "--format=tar.gz", f"--output={_ARCHIVE}", "HEAD"],
      _gcloud_tpu("scp", _ARCHIVE, f"{_NAME.value}:~/", "--worker=all"),
      _on_all_workers(install),
      _on_all_workers(train),
  ], _gcloud_tpu("delete", _NAME.value, "--quiet")


def main(argv):
  try:
    setup_and_train, teardown = commands(argv[1:])
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  try:
    for command in setup_and_train:
      shell.run(command, _DRY_RUN.value)
  finally:
    if not _KEEP.value:
      shell.run(teardown, _DRY_RUN.value)


if __name__ == "__main__":
  app.run(main)
