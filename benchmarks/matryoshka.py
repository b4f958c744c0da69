r"""Matryoshka representations: ROC AUC against the dims of the pooled vector used.

  python -m byteflax.main --config=configs/byteqrnn_toxicity.py --workdir=/tmp/mrl \
      --config.model.matryoshka_dims='(16, 32, 64, 128)'
  python -m benchmarks.matryoshka --config=configs/byteqrnn_toxicity.py --workdir=/tmp/mrl \
      --config.model.matryoshka_dims='(16, 32, 64, 128)' --out=benchmarks/results/matryoshka

One pass over validation and test with `all_dims=True` gives the logits from every trained
prefix (and the whole vector) at once: the same numbers as evaluating the run with
`--config.model.representation_dims=d` for each d, without a pass per d. Prints the table
and writes <out>/matryoshka.json.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import results_io
from byteflax import cli
from byteflax import early_exit
from byteflax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The Matryoshka run's config (with its matryoshka_dims).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run.")
_OUT = flags.DEFINE_string("out", None, "Directory for matryoshka.json.")


def measure(config, workdir: str) -> dict:
  trainer = train.Trainer(config)
  if not config.model.get("matryoshka_dims"):
    raise ValueError("Set --config.model.matryoshka_dims to the dims the run was trained "
                     "with.")
  variables, step = train.load_variables(workdir, trainer)
  results = {"workdir": workdir, "checkpoint_step": step, "rows": []}
  aucs = {}
  for split in ("validation", "test"):
    logits, labels = early_exit.split_logits(trainer, variables, split, outputs="all_dims")
    aucs[split] = [early_exit.mean_auc(labels, dims_logits) for dims_logits in logits]
  widths = [*sorted(set(config.model.matryoshka_dims)), "all"]  # `nested_dims`' order.
  for index, width in enumerate(widths):
    results["rows"].append({"dims": width, "validation_roc_auc": aucs["validation"][index],
                            "test_roc_auc": aucs["test"][index]})
  return results


def format_table(results: dict) -> str:
  lines = ["| pooled dims used | validation ROC AUC | test ROC AUC |", "|---|---|---|"]
  lines += [f"| {r['dims']} | {r['validation_roc_auc']:.4f} | {r['test_roc_auc']:.4f} |"
            for r in results["rows"]]
  return "\n".join(lines)


@cli.clean_input_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  results = measure(_CONFIG.value, _WORKDIR.value)
  results_io.report(results, format_table(results), _OUT.value, "matryoshka")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
