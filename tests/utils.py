"""Helpers shared by the module tests."""

import json

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
