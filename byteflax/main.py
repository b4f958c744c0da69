r"""Entry point: train or evaluate a byteflax model from a Python config.

  python -m byteflax.main --config=configs/byteqrnn_toxicity.py --workdir=/tmp/run \
      [--config.optim.learning_rate=1e-3 ...] [--mode=train|eval]
  python -m byteflax.main --workdir=/tmp/run --mode=eval   # with the run's own config.json
  python -m byteflax.main --list_tasks
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import seqio

from byteflax import cli
from byteflax import train
import tasks  # pylint: disable=unused-import  (registers the SeqIO tasks)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file, optionally with ':variant'.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and eval.json go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (resumes if workdir has checkpoints) or eval only.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() first (one process per host on a TPU pod or GPU "
    "cluster; coordinates are auto-detected there).")
# For clusters JAX cannot auto-detect (e.g. launch/gpu.py's processes); unset = auto-detect.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: how many processes take part.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process's id, 0 .. num_processes - 1.")
_LIST_TASKS = flags.DEFINE_bool("list_tasks", False,
                                "Print registered SeqIO tasks and mixtures and exit.")


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO chatter from orbax / seqio / TF (dozens of lines per checkpoint or eval)."""

  _NOISY = ("orbax", "tensorflow", "seqio")
  # seqio warns that in-memory sources reshuffle poorly on restart; our input pipeline is a
  # deterministic stream that a restart replays from its step, so the warning does not apply.
  _IRRELEVANT = ("uncached FunctionDataset",)

  def filter(self, record):
    if any(text in str(record.msg) for text in self._IRRELEVANT):
      return False
    return (record.levelno >= logging.logging.WARNING
            or not any(name in record.pathname for name in self._NOISY))


@cli.clean_input_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_logger().addFilter(_QuietLibraries())
  if _LIST_TASKS.value:
    print("\n".join(sorted(seqio.TaskRegistry.names() | seqio.MixtureRegistry.names())))
    return
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required.")
  config = _CONFIG.value
  if config is None:
    if _MODE.value == "train":
      raise app.UsageError("--config is required to train (--mode=eval without it reads "
                           f"the run's own {train.CONFIG_FILE}).")
    config = train.run_config(_WORKDIR.value)
  if _DISTRIBUTED.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif any(flag.present for flag in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id need "
                         "--distributed.")
  logging.info("Config:\n%s", config)
  run = train.train_and_evaluate if _MODE.value == "train" else train.evaluate_checkpoint
  report = run(config, _WORKDIR.value)
  if report.get("preempted"):
    # Exit 0: the scheduler asked us to stop, and the checkpoint to resume from is saved.
    print(f"Preempted at step {report['step']}; rerun the same command to resume.")
    return
  summary = {name: {k: v for k, v in m.items() if "/" not in k}
             for name, m in report.items() if isinstance(m, dict)}
  print(json.dumps({"step": report["step"], "num_params": report["num_params"], **summary},
                   indent=2))
  for name, m in summary.items():
    if "auc" in m:  # Classification; pretraining reports loss and accuracy only.
      print(f"{name} ROC AUC: {m['auc']:.4f}")


if __name__ == "__main__":
  app.run(main)
