"""Helpers shared by the module tests."""

import contextlib
import json

from etils import epath
import numpy as np


def ragged_inputs(lengths, length, dim, seed=0):
  """Random `[batch, length, dim]` inputs whose pad positions hold large garbage values.

  Returns (x, mask) with mask `[batch, length]` True on the first `lengths[i]` positions.
  """
  rng = np.random.default_rng(seed)
  mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
  x = rng.normal(size=(len(lengths), length, dim)).astype(np.float32)
  garbage = rng.uniform(-1e3, 1e3, size=x.shape).astype(np.float32)
  return np.where(mask[..., None], x, garbage), mask


@contextlib.contextmanager
def fake_bucket(root, monkeypatch):
  """Serves gs://bucket/... from the local folder `root` to everything that goes through
  etils.epath (CI reaches no bucket), by the backend epath uses for gs:// when TensorFlow is
  installed, tf.io.gfile (the same file objects as on GCS: e.g. a write stream that cannot
  seek); local paths stay on the local backend. Yields `local`, which maps a gs://bucket
  path to its folder, for the writers that bypass epath (orbax's tensorstore, TensorBoard)."""

  def local(path):
    return str(path).replace("gs://bucket", str(root), 1)

  def in_bucket(name):
    through_gfile = getattr(epath.backend.tf_backend, name)

    def method(local_method, *args, **kwargs):
      paths = args[:2] if name in ("copy", "rename", "replace") else args[:1]
      if not any(str(path).startswith("gs://") for path in paths):
        return local_method(*args, **kwargs)
      result = through_gfile(*map(local, paths), *args[len(paths):], **kwargs)
      if name == "glob":  # A bucket's glob names what it matched in the bucket.
        return [str(match).replace(str(root), "gs://bucket", 1) for match in result]
      return result

    return method

  # epath.testing.mock_epath replaces epath's backend table, which epath reads for gs://
  # only when it believes TensorFlow absent (else it goes to tf.io.gfile straight away).
  monkeypatch.setattr(epath.gpath, "_is_tf_installed", lambda: False)
  with epath.testing.mock_epath(**{name: in_bucket(name) for name in (
      "copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove",
      "rename", "replace", "rmtree", "stat", "walk")}):
    yield local


def write_file(path, data):
  """Writes `data` (str as UTF-8, or bytes) to the pathlib `path`, making its folder; returns
  it as a string."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, str):
    path.write_text(data, encoding="utf-8")
  else:
    path.write_bytes(data)
  return str(path)


def write_toy_jsonl(directory, numbered=False):
  """A separable toy task as directory/{train,test}.jsonl (400 / 120 examples, ~40%
  offensive, marked by a word), for end-to-end CLI tests.

  numbered: end every text with its index, so that no two texts are equal.
  """
  rng = np.random.default_rng(0)
  words = ["apple", "river", "stone", "cloud", "green", "quiet", "table", "music"]
  for split, count in (("train", 400), ("test", 120)):
    with open(directory / f"{split}.jsonl", "w") as f:
      for i in range(count):
        label = int(rng.random() < 0.4)
        text = " ".join(rng.choice(words, size=rng.integers(3, 12)))
        text += f" {i}" if numbered else ""
        f.write(json.dumps({"text": text + (" dammit" if label else ""), "label": label})
                + "\n")


class LabelsObjective:
  """The classification objective's loss and model arguments, for `step.train_step` on a
  hand-made batch {"inputs", "labels", "weights"}."""

  @staticmethod
  def model_args(batch):
    return (batch["inputs"],)

  @staticmethod
  def loss(logits, batch):
    from byteflax import step  # pylint: disable=g-import-not-at-top
    return step.weighted_sigmoid_loss(logits, batch["labels"], batch["weights"])
