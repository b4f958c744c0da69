r"""How much a row's perturbed ROC AUC moves with the perturbed copy: one TF-IDF model per
kind, fit once, scored on the test split perturbed with seeds 0..--seeds-1.

  python -m benchmarks.perturb_spread --config=configs/byteqrnn_toxicity.py \
      --baselines=tfidf_word --out=benchmarks/results/toxic_comments/perturb_spread

`byteflax.perturb.perturb_texts` draws every text's rewrites from one seeded stream in the
split's order, and that order follows `config.data.length_buckets`: a config with other
buckets gets another copy, as another seed does. Reading this spread beside compare.py's
perturbed column says which differences a copy can explain. C is fixed (--c; compare.py
chose 10 on validation for both TF-IDF models on the toxic comments), so the only thing
that varies is the copy. ~10 min per kind on the comments on 2 CPU cores.
"""

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from benchmarks import results_io
from byteflax import baselines
from byteflax import cli
from byteflax import distill
from byteflax import input_pipeline
from byteflax import machine
from byteflax import perturb

_CONFIG = config_flags.DEFINE_config_file("config", None, "The task's config.",
                                          lock_config=True)
_BASELINES = flags.DEFINE_list("baselines", ["tfidf_word"], "TF-IDF kinds to fit.")
_C = flags.DEFINE_float("c", 10.0, "Inverse regularisation of the logistic regression.")
_SEEDS = flags.DEFINE_integer("seeds", 4, "Perturbed copies: seeds 0..seeds-1.")
_RATE = flags.DEFINE_float("rate", perturb.DEFAULT_RATE, "Share of words perturbed.")
_OUT = flags.DEFINE_string("out", None, "Folder for perturb_spread.json.")


def spread(config, kinds: list[str], c: float, seeds: int, rate: float) -> dict:
  """{kind: clean ROC AUC and the perturbed one of each seed} on the config's test split."""
  _, train_texts, train_labels = distill.split_texts(config, "train")
  _, test_texts, test_labels = distill.split_texts(config, "test")
  copies = [perturb.perturb_texts(test_texts, rate, seed=seed) for seed in range(seeds)]
  rows = []
  for kind in kinds:
    model = baselines.build(kind).fit((train_texts, train_labels), None, c=c)
    perturbed = [baselines.macro_auc(test_labels, model.decision_function(texts))
                 for texts in copies]
    rows.append({"name": kind, "auc": baselines.macro_auc(
        test_labels, model.decision_function(test_texts)), "auc_perturbed": perturbed})
  return {"task": input_pipeline.resolve_task(config.data),
          "length_buckets": list(config.data.length_buckets),
          "c": c, "rate": rate, "test_examples": len(test_texts), "machine": machine.describe(),
          "rows": rows}


def format_table(results: dict) -> str:
  seeds = len(results["rows"][0]["auc_perturbed"]) if results["rows"] else 0
  lines = ["| model | clean | " + " | ".join(f"perturbed, seed {s}" for s in range(seeds))
           + " | range |", "|---|---|" + "---|" * (seeds + 1)]
  for row in results["rows"]:
    values = row["auc_perturbed"]
    lines.append(f"| {row['name']} | {row['auc']:.4f} | "
                 + " | ".join(f"{v:.4f}" for v in values)
                 + f" | {np.max(values) - np.min(values):.4f} |")
  return "\n".join(lines)


@cli.clean_input_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if any(not kind.startswith("tfidf_") for kind in _BASELINES.value):
    raise app.UsageError(f"--baselines takes TF-IDF kinds (tfidf_word, tfidf_char), got "
                         f"{_BASELINES.value}.")
  results = spread(_CONFIG.value, _BASELINES.value, _C.value, _SEEDS.value, _RATE.value)
  results_io.report(results, format_table(results), _OUT.value, "perturb_spread")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
