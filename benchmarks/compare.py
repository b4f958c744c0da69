r"""ByteQRNN against the baselines: ROC AUC, parameters, file size and CPU latency in one table.

  python -m byteflax.export --config=configs/byteqrnn_toxicity.py --workdir=/tmp/byteqrnn \
      --out=/tmp/byteqrnn/export
  python -m benchmarks.compare --config=configs/byteqrnn_toxicity.py \
      --export_dir=/tmp/byteqrnn/export [--runs=/tmp/transformer,/tmp/funnel] \
      [--baselines=tfidf_char,minilm] [--results_dir=benchmarks/results]
  python -m benchmarks.compare --config=configs/byteqrnn_toxicity.py \
      --baselines=tfidf_char,minilm  # The baselines alone: no byte model needed.

Rows, all on the test split of the config's task (any task: the same --config.data.* flags
as byteflax.main, e.g. --config.data.train_path=mine.csv), as the byte models see it (texts
cut to config.data.max_length bytes):
  ByteQRNN int8 / float32: the TFLite files in --export_dir, run in the LiteRT interpreter;
  --runs: trained workdirs of other byte models (ByteTransformer, ByteFunnelTransformer; they
    have no TFLite recipe yet), run in JAX, size = float32 parameters;
  --baselines: byteflax.baselines models fit on train (C tuned on validation): TF-IDF char /
    word n-grams + logistic regression; minilm = frozen all-MiniLM-L6-v2 sentence embeddings
    + logistic regression; minilm_finetuned = all-MiniLM-L6-v2 fine-tuned end to end
    (--finetune_epochs, the best validation epoch kept; --finetune_examples subsamples the
    training texts for a CPU budget; --frozen_examples does so for the frozen row) (both the
    `baselines` extra). Size = the pickled fitted model, or the encoder's float32 weights
    (+ the LR).
Quality: ROC AUC and PR-AUC (average precision; ROC AUC saturates on the toxic comments) on
the test texts, F1 there at the threshold of the row's best F1 on the validation split (the
F1 a deployed model gets), and ROC AUC on a perturbed copy of them (byteflax/perturb.py: obfuscated
spellings at --perturb_rate, seeded; 0 skips it), where a byte model needs no vocabulary.
--max_test_examples scores a seeded subsample of the split (every row the same texts).
Latency: per example, batch 1, one CPU thread (XLA, LiteRT and torch alike), median of
--latency_runs warm calls on test examples drawn at random. A TFLite model runs each text at
its shortest signature that holds it (as on device and in byteflax.classify), a JAX row at its
max_length (padded), a text baseline takes the text as it is.
Writes <results_dir>/compare.json and compare.png (ROC AUC vs latency, bubble area = size).
"""

# export_benchmark pins XLA to one thread on import, before JAX starts.
from benchmarks import export_benchmark  # pylint: disable=g-bad-import-order

# pylint: disable=g-import-not-at-top,wrong-import-position
from collections.abc import Callable
import datetime
import functools
import json
import os

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import results_io
from byteflax import baselines
from byteflax import cli
from byteflax import distill
from byteflax import export
from byteflax import input_pipeline
from byteflax import machine
from byteflax import metrics
from byteflax import perturb
from byteflax import splitter
from byteflax import train

BERT_BASE_PARAMS = 110_000_000
BERT_BASE_BYTES = 4 * BERT_BASE_PARAMS  # float32.

FLAGS = flags.FLAGS
# --config, --export_dir, --split and --latency_runs are export_benchmark's flags.
_RUNS = flags.DEFINE_list("runs", [], "Workdirs of other trained byte models (JAX rows).")
_BASELINES = flags.DEFINE_list("baselines", ["tfidf_char", "tfidf_word", "minilm"],
                               "byteflax.baselines models to fit and compare.")
_FINETUNE_EPOCHS = flags.DEFINE_integer(
    "finetune_epochs", 1, "minilm_finetuned: epochs (the best validation epoch is kept).")
_FINETUNE_EXAMPLES = flags.DEFINE_integer(
    "finetune_examples", None,
    "minilm_finetuned: fine-tune on a seeded subsample of this many training texts (CPU "
    "budgets: ~25 CPU-minutes an epoch per 14k texts).")
_FROZEN_EXAMPLES = flags.DEFINE_integer(
    "frozen_examples", None,
    "minilm: fit the logistic regression on the frozen embeddings of a seeded subsample of "
    "this many training texts (CPU budgets: encoding costs ~1 CPU-minute per 1k texts).")
_PERTURB_RATE = flags.DEFINE_float(
    "perturb_rate", perturb.DEFAULT_RATE,
    "Share of words obfuscated in the perturbed copy of the test texts; 0: no perturbed "
    "column.")
_MAX_TEST_EXAMPLES = flags.DEFINE_integer(
    "max_test_examples", None, "Score a seeded subsample of this many test examples.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", "benchmarks/results",
                                   "Where compare.json and compare.png go.")


class TestSet:
  """The evaluated texts as every row sees them: byte ids `[n, length]` (cut to the byte
  models' max_length, as `input_pipeline.task_examples` cuts them), their texts, labels
  `[n, labels]`, the perturbed texts (None without --perturb_rate), and the validation
  split's texts and labels, on which each row chooses its F1 threshold."""

  def __init__(self, config, split: str, max_examples: int | None, perturb_rate: float):
    self.ids, self.texts, self.labels = distill.split_texts(config, split)
    for column in range(self.labels.shape[1]):
      classes = np.unique(self.labels[:, column])
      if len(classes) < 2:  # ROC AUC would be NaN in every row.
        raise cli.InputError(
            f"The {split} split's {len(self.texts)} example(s) are all of class "
            f"{int(classes[0])} in label column {column}: ROC AUC needs both classes. "
            "Give more data, or a --config.data.test_path that holds both.")
    if max_examples and max_examples < len(self.texts):
      keep = np.sort(np.random.default_rng(0).choice(len(self.texts), max_examples,
                                                     replace=False))
      self.ids, self.labels = self.ids[keep], self.labels[keep]
      self.texts = [self.texts[i] for i in keep]
    self.perturbed = (perturb.perturb_texts(self.texts, perturb_rate) if perturb_rate
                      else None)
    _, self.validation_texts, self.validation_labels = distill.split_texts(
        config, "validation")

  def texts_of(self, variant: str) -> list[str]:
    """The texts of "test" (the compared split), "perturbed" or "validation"."""
    return {"test": self.texts, "perturbed": self.perturbed,
            "validation": self.validation_texts}[variant]

  def ids_at(self, length: int, variant: str = "test") -> np.ndarray:
    """Byte ids `[n, length]` of a variant's texts, cut to length as on device."""
    if variant == "test" and length == self.ids.shape[1]:
      return self.ids
    return splitter.ByteSplitter(length).encode_batch(self.texts_of(variant))[0]

  def quality(self, score: Callable[[np.ndarray | list[str]], np.ndarray],
              inputs_of: Callable[[str], np.ndarray | list[str]],
              validation_logits: np.ndarray | None = None) -> dict[str, float]:
    """ROC AUC, PR-AUC, F1 at the threshold of the best F1 on validation (the F1 a
    deployed model gets, as train.evaluate's `f1_at_threshold`) and perturbed ROC AUC of
    `score` (inputs -> logits `[n, labels]`); `inputs_of(variant)` gives its inputs (a
    `texts_of` variant). validation_logits: the row's validation scores where its fit
    already made them; otherwise they are scored here."""
    logits = score(inputs_of("test"))
    if validation_logits is None:
      validation_logits = score(inputs_of("validation"))
    f1s = [metrics.f1_at_threshold(
        self.labels[:, j], logits[:, j],
        metrics.best_f1(self.validation_labels[:, j], validation_logits[:, j])[1])
           for j in range(self.labels.shape[1])]
    quality = {"auc": baselines.macro_auc(self.labels, logits),
               "pr_auc": float(np.mean([metrics.pr_auc(self.labels[:, j], logits[:, j])
                                        for j in range(self.labels.shape[1])])),
               "f1_at_threshold": float(np.mean(f1s))}
    if self.perturbed is not None:
      quality["auc_perturbed"] = baselines.macro_auc(self.labels,
                                                     score(inputs_of("perturbed")))
    return quality


def _row(name, kind, quality, params, size_bytes, latency_ms, **extra):
  return {"name": name, "kind": kind, **quality, "params": int(params),
          "bytes": int(size_bytes), "latency_ms": latency_ms,
          "params_vs_bert_base": BERT_BASE_PARAMS / params,
          "bytes_vs_bert_base": BERT_BASE_BYTES / size_bytes, **extra}


def tflite_rows(export_dir: str, test: TestSet, latency_runs: int) -> list[dict]:
  """ByteQRNN's exported models (export.FILES) through LiteRT."""
  with open(os.path.join(export_dir, export.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  length = manifest["input"]["shape"][1]
  rows = []
  for filename in export.exported_files(export_dir):
    precision = export.QUANTIZATION_OF_FILE[filename]
    path = os.path.join(export_dir, filename)
    classifier = export.TFLiteClassifier(path)
    rows.append(_row(
        f"{manifest['model_name']} TFLite {precision}", "byte model (TFLite)",
        test.quality(lambda ids: classifier(ids)["logits"],
                     lambda variant: test.ids_at(length, variant)),
        manifest["num_params"], os.path.getsize(path),
        export.median_latency_ms(classifier, test.ids_at(length), latency_runs),
        input_bytes=length, checkpoint_step=manifest["checkpoint_step"]))
  return rows


def jax_row(workdir: str, task_name: str, test: TestSet, latency_runs: int) -> dict:
  """A trained byte model evaluated in JAX at its max_length (float32 params)."""
  config = train.run_config(workdir)
  trainer = train.Trainer(config)
  if trainer.task_name != task_name:
    raise ValueError(f"{workdir} was trained on {trainer.task_name!r}, not {task_name!r}.")
  variables, step = train.load_variables(workdir, trainer)
  length = config.data.max_length
  # Variables as an argument, not closed over: XLA would constant-fold them for minutes.
  apply = functools.partial(jax.jit(
      lambda v, x: trainer.model.apply(v, x, train=False)), variables)

  def score(ids):
    return np.concatenate([np.asarray(apply(ids[i:i + 64])) for i in range(0, len(ids), 64)])

  params = train.count_params(variables["params"])
  return _row(f"{config.model_name} (JAX)", "byte model (JAX)",
              test.quality(score, lambda variant: test.ids_at(length, variant)),
              params, 4 * params,
              export.median_latency_ms(
                  lambda x: jax.block_until_ready(apply(x)), test.ids_at(length),
                  latency_runs),
              input_bytes=length, checkpoint_step=step, workdir=workdir)


_NAMES = {"minilm": "all-MiniLM-L6-v2 frozen + LR",
          "minilm_finetuned": "all-MiniLM-L6-v2 fine-tuned"}


def baseline_row(kind: str, splits: dict, test: TestSet, latency_runs: int,
                 **options) -> dict:
  """Fits a byteflax.baselines model on train (C or epoch on validation), scores the test
  set; options go to `baselines.build` (fine-tuning budgets)."""
  model = baselines.build(kind, **options).fit(splits["train"], splits["validation"])
  quality = test.quality(model.decision_function, test.texts_of, model.validation_scores)
  if kind.startswith("minilm"):
    import torch  # pylint: disable=g-import-not-at-top  (the baselines extra)
    torch.set_num_threads(1)
  # Texts as a [n, 1] object array: median_latency_ms feeds it rows [1, 1].
  latency = export.median_latency_ms(
      lambda x: model.decision_function(list(x[:, 0])),
      np.array(test.texts, dtype=object)[:, None], latency_runs)
  name = _NAMES.get(kind, f"TF-IDF {kind.removeprefix('tfidf_')} n-grams + LR")
  return _row(name, "baseline", quality, model.num_params(), model.size_bytes(), latency,
              c=model.c, **options)


def compare(config, export_dir: str | None, runs: list[str], baseline_kinds: list[str],
            split: str, latency_runs: int, max_test_examples: int | None = None,
            perturb_rate: float = perturb.DEFAULT_RATE,
            baseline_options: dict[str, dict] | None = None) -> dict:
  """All rows on one task and split, plus the context to read them; baseline_options maps
  a baseline kind to its options (`baselines.build`: the MiniLM models' budgets)."""
  test = TestSet(config, split, max_test_examples, perturb_rate)
  rows = tflite_rows(export_dir, test, latency_runs) if export_dir else []
  task_name = input_pipeline.resolve_task(config.data)
  jax_rows = [jax_row(workdir, task_name, test, latency_runs) for workdir in runs]
  names = [row["name"] for row in jax_rows]
  for row in jax_rows:  # Runs of one model (e.g. seeds) are told apart by their workdir.
    if names.count(row["name"]) > 1:
      row["name"] += f" {row['workdir']}"
  rows += jax_rows
  examples = {split: len(test.texts)}
  if baseline_kinds:
    splits = {"train": distill.split_texts(config, "train")[1:],
              "validation": (test.validation_texts, test.validation_labels)}
    examples.update({name: len(texts) for name, (texts, _) in splits.items()})
    rows += [baseline_row(kind, splits, test, latency_runs,
                          **(baseline_options or {}).get(kind, {}))
             for kind in baseline_kinds]
  return {"task": task_name, "split": split, "max_length": config.data.max_length,
          "examples": examples,
          "positive_rate_test": float(np.mean(test.labels)),
          "perturbation": {"rate": perturb_rate, "kinds": sorted(perturb.PERTURBATIONS),
                           "seed": 0} if perturb_rate else None,
          "latency_runs": latency_runs, "bert_base": {"params": BERT_BASE_PARAMS,
                                                      "bytes": BERT_BASE_BYTES},
          "machine": machine.describe(),
          "date": datetime.date.today().isoformat(), "rows": rows}


def format_table(results: dict) -> str:
  """A Markdown table of the rows."""
  lines = ["| model | ROC AUC | PR-AUC | F1 at val. threshold | ROC AUC perturbed | params "
           "| bytes | ms / example | BERT-base / size |", "|---|---|---|---|---|---|---|---|---|"]
  for row in results["rows"]:
    perturbed = f"{row['auc_perturbed']:.4f}" if "auc_perturbed" in row else "-"
    lines.append(f"| {row['name']} | {row['auc']:.4f} | {row['pr_auc']:.4f} | "
                 f"{row['f1_at_threshold']:.4f} | {perturbed} | "
                 f"{row['params']:,} | {row['bytes']:,} | {row['latency_ms']:.2f} | "
                 f"{row['bytes_vs_bert_base']:.0f}x |")
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  """ROC AUC vs latency (log), bubble area proportional to the file size."""
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional: the "bench" extra)
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, ax = pyplot.subplots(figsize=(8, 5.5))
  largest = max(row["bytes"] for row in results["rows"])
  for row in results["rows"]:
    ax.scatter(row["latency_ms"], row["auc"], s=2000 * row["bytes"] / largest + 20,
               alpha=0.5)
    ax.annotate(f"{row['name']}\n{row['bytes'] / 1e6:.1f} MB", (row["latency_ms"], row["auc"]),
                fontsize=8, ha="center", va="bottom", xytext=(0, 8),
                textcoords="offset points")
  ax.set_xscale("log")
  ax.set_xlabel("ms per example (batch 1, 1 CPU thread)")
  ax.set_ylabel(f"{results['split']} ROC AUC")
  ax.set_title(f"{results['task']}: quality vs latency (bubble area = size)")
  ax.grid(True, alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=120)


@cli.clean_input_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.workdir or FLAGS.out:
    raise app.UsageError("--workdir / --out are export_benchmark's; compare takes the "
                         "exported run as --export_dir, other runs as --runs and writes to "
                         "--results_dir.")
  if not (FLAGS.export_dir or _RUNS.value or _BASELINES.value):
    raise app.UsageError("Nothing to compare: give --export_dir (an exported ByteQRNN), "
                         "--runs and/or --baselines.")
  results = compare(FLAGS.config, FLAGS.export_dir, _RUNS.value, _BASELINES.value,
                    FLAGS.split, FLAGS.latency_runs, _MAX_TEST_EXAMPLES.value,
                    _PERTURB_RATE.value,
                    {"minilm": {"max_train_examples": _FROZEN_EXAMPLES.value},
                     "minilm_finetuned": {"epochs": _FINETUNE_EPOCHS.value,
                                          "max_train_examples": _FINETUNE_EXAMPLES.value}})
  print(format_table(results))
  print("Wrote", ", ".join(results_io.write_results(_RESULTS_DIR.value, "compare", results,
                                                    plot)))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
