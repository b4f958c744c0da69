r"""TF-IDF + logistic regression baselines on the byteflax task splits (test ROC AUC).

Fortunes, on exactly the split the SeqIO tasks use
(`split_examples(load_offensive_examples(languages))`):

  python benchmarks/tfidf_baseline.py --languages en --languages en,es,it --json out.json

A user's CSV / JSONL / Parquet files, read and split as `register_file_task` does:

  python benchmarks/tfidf_baseline.py --train_path train.csv [--test_path test.csv] \
      [--validation_path valid.csv] [--text_key text] [--label_keys toxic,insult] \
      [--positive_label spam] [--invalid_utf8 cp1252]

Needs `pip install -e .` (or PYTHONPATH=. from the repository root) to import `tasks`.
Two feature sets, each TfidfVectorizer(sublinear_tf=True) fit on train: words (1-2 grams)
and characters (2-5 grams). For each, C of a LogisticRegression is chosen by validation
AUC over a small grid, and that model's test AUC is reported (macro-averaged over labels
when there are several).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import time

import numpy as np

from byteflax import baselines
from byteflax import cli
from tasks import fortunes
from tasks import user_files

Splits = dict[str, tuple[list[str], np.ndarray]]


def _as_arrays(splits: dict[str, list[tuple[str, Sequence[int]]]]) -> Splits:
  """{split: (texts, labels [n, num_labels])}."""
  return {name: ([text for text, _ in examples],
                 np.array([labels for _, labels in examples], np.int64).reshape(
                     len(examples), -1))
          for name, examples in splits.items()}


def evaluate(splits: Splits, features: str) -> tuple[float, float]:
  """Test AUC of the validation-tuned TF-IDF + LR model, and the chosen C."""
  model = baselines.TfidfLogisticRegression(features).fit(splits["train"],
                                                          splits["validation"])
  texts, labels = splits["test"]
  return baselines.macro_auc(labels, model.decision_function(texts)), model.c


def run(name: str, splits: Splits) -> dict[str, object]:
  """Both feature sets on one dataset; returns a row of the results table."""
  for split, (_, labels) in splits.items():
    if (labels.min(axis=0) == labels.max(axis=0)).any():
      raise ValueError(f"{name}: a label has a single class in the {split} split, so AUC is "
                       "undefined.")
  all_labels = np.concatenate([labels for _, labels in splits.values()])
  row = {"task": name, "examples": len(all_labels),
         "positive_rate": float(all_labels.mean()),
         "split_sizes": {split: len(texts) for split, (texts, _) in splits.items()}}
  for features in baselines.TFIDF_FEATURES:
    start = time.time()
    auc, c = evaluate(splits, features)
    row[f"{features}_auc"], row[f"{features}_c"] = auc, c
    row[f"{features}_seconds"] = round(time.time() - start, 1)
  return row


@cli.clean_input_errors
def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--languages", action="append",
                      help="Comma-separated fortunes languages (en, es, it); repeatable. "
                           "Default: en, unless --train_path is given.")
  parser.add_argument("--train_path", help="CSV / JSONL / Parquet training file.")
  parser.add_argument("--test_path", help="Test file (default: carved from train).")
  parser.add_argument("--validation_path",
                      help="Validation file (default: carved from train).")
  parser.add_argument("--text_key", default="text")
  parser.add_argument("--label_keys", default="label", help="Comma-separated label columns.")
  parser.add_argument("--positive_label",
                      help="Labels that are class names: the one that reads as 1.")
  parser.add_argument("--invalid_utf8", default="replace", choices=user_files.INVALID_UTF8,
                      help="What a byte that is not UTF-8 reads as.")
  parser.add_argument("--validation_fraction", type=float, default=0.1)
  parser.add_argument("--seed", type=int, default=0, help="Seed of the split shuffle.")
  parser.add_argument("--json", help="Also write the results table to this JSON file.")
  args = parser.parse_args(argv)
  if (args.test_path or args.validation_path) and not args.train_path:
    parser.error("--test_path/--validation_path need --train_path.")

  rows = []
  for languages in args.languages or ([] if args.train_path else ["en"]):
    langs = tuple(lang.strip() for lang in languages.split(","))
    examples = fortunes.load_offensive_examples(langs)
    splits = fortunes.split_examples([(text, (label,)) for text, label in examples],
                                     seed=args.seed)
    rows.append(run("fortunes " + "+".join(langs), _as_arrays(splits)))
  if args.train_path:
    splits = user_files.read_file_splits(
        args.train_path, args.test_path, args.validation_path, text_key=args.text_key,
        label_keys=tuple(args.label_keys.split(",")),
        validation_fraction=args.validation_fraction, seed=args.seed,
        invalid_utf8=args.invalid_utf8, positive_label=args.positive_label)
    rows.append(run(args.train_path, _as_arrays(splits)))

  print(f"{'task':<28} {'examples':>9} {'positive':>9} {'word AUC':>9} {'char AUC':>9}")
  for row in rows:
    print(f"{row['task']:<28} {row['examples']:>9,} {row['positive_rate']:>9.1%} "
          f"{row['word_auc']:>9.3f} {row['char_auc']:>9.3f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
