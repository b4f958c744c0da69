r"""Per-comment latency on one CPU thread: exported byte models (int8, float) against TF-IDF +
LR and MiniLM, on the same texts in one run.

  python -m byteflax.export --config=configs/byteqrnn_toxicity.py --workdir=/tmp/byteqrnn \
      --out=/tmp/byteqrnn/export
  python -m benchmarks.latency --config=configs/byteqrnn_toxicity.py \
      --export_dir=/tmp/byteqrnn/export --baselines=tfidf_word,minilm \
      --out=benchmarks/results/latency
  # Several exports side by side (e.g. ByteQRNN and ByteTransformer runs of the same task):
  python -m benchmarks.latency ... --export_dir=/tmp/byteqrnn/export,/tmp/transformer/export

Two tables, printed and written to <out>/latency.{json,png}:
  per comment  --texts test texts drawn at random (seed 0; the same for any length
               buckets), each scored once at batch 1
               by every model in turn (so all share the machine's load), after --warmup
               calls: median / p90 / p99 ms. The exported model runs each
               text at the shortest signature length that holds it (byteflax/export.py).
  by length    a synthetic text of n - 1 bytes (n ids with EOS; letters and spaces) for n
               in --lengths, --runs calls of each model in turn: median ms. Past the
               model's longest signature a text is cut to it, as on device.
Rows: every model file of each --export_dir, named by its manifest's model_name (and
the directory where two share one); `tfidf_word` / `tfidf_char`: the vectorizer and
logistic regression (C=1, fitted on --fit_texts training texts: latency hardly depends on
the fit); `minilm`: all-MiniLM-L6-v2's forward pass on one text (torch, one thread), what
both the frozen and the fine-tuned MiniLM rows cost per comment.
"""

import os

# One CPU thread for every runtime (set before they start), so latencies compare like for like.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
from collections.abc import Callable, Sequence
import json

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from benchmarks import results_io
from byteflax import baselines
from byteflax import cli
from byteflax import distill
from byteflax import export
from byteflax import machine
from byteflax import splitter

def synthetic_text(num_ids: int, seed: int = 0) -> str:
  """num_ids - 1 bytes of lowercase words (the EOS id makes num_ids)."""
  rng = np.random.default_rng(seed)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz     "))
  return "".join(rng.choice(letters, size=num_ids - 1))


def model_name_of(export_dir: str) -> str:
  """The manifest's model_name, or the directory's name for files without one."""
  manifest = os.path.join(export_dir, export.MANIFEST_FILE)
  if not os.path.exists(manifest):  # Files converted without byteflax.export's manifest.
    return os.path.basename(os.path.normpath(export_dir))
  with open(manifest) as f:
    return json.load(f)["model_name"]


def predictors(export_dirs: Sequence[str], baseline_kinds: Sequence[str], train_texts, train_labels
               ) -> dict[str, Callable[[str], object]]:
  """Row name -> a function scoring one text."""
  rows = {}
  names = [model_name_of(export_dir) for export_dir in export_dirs]
  for export_dir, model_name in zip(export_dirs, names):
    if names.count(model_name) > 1:  # E.g. two exports of one model: tell them apart.
      model_name = f"{model_name} ({export_dir})"
    for filename in [name for name in export.FILES.values()
                     if os.path.exists(os.path.join(export_dir, name))]:
      classifier = export.TFLiteClassifier(os.path.join(export_dir, filename), num_threads=1)
      encode = splitter.ByteSplitter(classifier.length).encode
      rows[f"{model_name} {filename}"] = (
          lambda text, c=classifier, e=encode: c(e(text)[None]))
  for kind in baseline_kinds:
    if kind.startswith("tfidf_"):
      model = baselines.TfidfLogisticRegression(kind.removeprefix("tfidf_")).fit(
          (train_texts, train_labels), None, c=1.0)
      rows[kind] = lambda text, m=model: m.decision_function([text])
    elif kind == "minilm":
      import torch  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(1)
      encoder = baselines.load_minilm()

      def minilm(text, encoder=encoder):
        with torch.no_grad():
          return encoder.encode([text], batch_size=1, show_progress_bar=False)

      rows[kind] = minilm
    else:
      raise ValueError(f"Unknown baseline {kind!r}: tfidf_word, tfidf_char or minilm.")
  return rows


def draw(texts: Sequence[str], count: int, rng: np.random.Generator) -> np.ndarray:
  """Indices of min(count, len(texts)) of `texts`, drawn by rng in the texts' sorted order:
  the draw does not depend on the split's order, which follows config.data.length_buckets."""
  order = np.argsort(np.asarray(texts, dtype=object), kind="stable")
  return order[rng.choice(len(texts), min(count, len(texts)), replace=False)]


def benchmark(config, export_dirs: Sequence[str], baseline_kinds: Sequence[str], num_texts: int,
              fit_texts: int, lengths: Sequence[int], runs: int, warmup: int) -> dict:
  _, test_texts, _ = distill.split_texts(config, "test")
  rng = np.random.default_rng(0)
  test_texts = [test_texts[i] for i in draw(test_texts, num_texts, rng)]
  _, train_texts, train_labels = distill.split_texts(config, "train")
  keep = draw(train_texts, fit_texts, rng)
  predicts = predictors(export_dirs, baseline_kinds, [train_texts[i] for i in keep],
                        train_labels[keep])
  per_text = export.time_each(predicts, test_texts, warmup)
  by_length = {str(length): export.time_each(predicts, [synthetic_text(length)] * runs, warmup)
               for length in lengths}
  rows = []
  for name in predicts:
    rows.append({"name": name, "median_ms": float(np.median(per_text[name])),
                 "p90_ms": float(np.percentile(per_text[name], 90)),
                 "p99_ms": float(np.percentile(per_text[name], 99)),
                 "ms_by_length": {length: float(np.median(times[name]))
                                  for length, times in by_length.items()}})
    print(f"{name}: median {rows[-1]['median_ms']:.3f} ms", flush=True)
  text_bytes = [len(t.encode("utf-8")) for t in test_texts]
  return {"task": config.data.task if not config.data.train_path else config.data.train_path,
          "texts": len(test_texts), "median_text_bytes": float(np.median(text_bytes)),
          "export_dirs": list(export_dirs), "threads": 1, "machine": machine.describe(),
          "rows": rows}


def format_table(results: dict) -> str:
  lengths = list(results["rows"][0]["ms_by_length"]) if results["rows"] else []
  cpu = results["machine"]
  lines = [f"Per comment ({results['texts']} test texts, median {results['median_text_bytes']:.0f}"
           " bytes; batch 1, one thread) and by length (ms), on "
           f"{cpu['cpu']} ({', '.join(cpu['features']) or 'no listed features'}):", "",
           "| model | median | p90 | p99 | " + " | ".join(lengths) + " |",
           "|---|---|---|---|" + "---|" * len(lengths)]
  for row in results["rows"]:
    lines.append(f"| {row['name']} | {row['median_ms']:.3f} | {row['p90_ms']:.3f} | "
                 f"{row['p99_ms']:.3f} | " + " | ".join(
                     f"{row['ms_by_length'][n]:.3f}" for n in lengths) + " |")
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axis = plt.subplots(figsize=(7, 4.5))
  for row in results["rows"]:
    lengths = [int(n) for n in row["ms_by_length"]]
    axis.plot(lengths, list(row["ms_by_length"].values()), marker="o", label=row["name"])
  axis.set(xscale="log", yscale="log", xlabel="text length (byte ids)",
           ylabel="ms per text (batch 1, one thread)",
           title="Latency against length")
  axis.grid(True, which="both", alpha=0.3)
  axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "The exported run's config (its task gives the texts).", lock_config=True)
  export_dirs = flags.DEFINE_list("export_dir", None,
                                   "--out of byteflax.export; several, comma-separated.")
  baselines = flags.DEFINE_list("baselines", ["tfidf_word", "minilm"],
                                 "Non-byte rows: tfidf_word, tfidf_char, minilm.")
  out = flags.DEFINE_string("out", None, "Directory for latency.json and latency.png.")
  texts = flags.DEFINE_integer("texts", 1000, "Test texts timed once each.")
  fit_texts = flags.DEFINE_integer("fit_texts", 20000, "Training texts the TF-IDF rows fit on.")
  lengths = flags.DEFINE_list("lengths", ["16", "32", "64", "128", "256", "512", "1024",
                                           "2048"], "Text lengths (ids) of the by-length table.")
  runs = flags.DEFINE_integer("runs", 50, "Timed calls per length.")
  warmup = flags.DEFINE_integer("warmup", 20, "Untimed calls before timing.")
  flags.mark_flags_as_required(["config", "export_dir"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    results = benchmark(config.value, export_dirs.value, baselines.value, texts.value,
                        fit_texts.value, [int(n) for n in lengths.value], runs.value,
                        warmup.value)
    results_io.report(results, format_table(results), out.value, "latency", plot)

  app.run(run)


if __name__ == "__main__":
  main()
