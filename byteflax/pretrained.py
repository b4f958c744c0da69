r"""Pretrained encoders shipped with the repository: written from a pretraining run, loaded
by name through config.init_from.

  python -m byteflax.pretrained --workdir=/tmp/pretrain_corpus --name=byteqrnn_corpus \
      --corpus_dir=/tmp/corpus

writes byteflax/pretrained/<name>.npz (the encoder's embed / GBST / encoder parameters in
float16, "module/.../name" keys: ~3 MB for ByteQRNN) and <name>.json (the manifest: the
run's step, config and final validation metrics, the corpus manifest's totals, the command,
and the .npz file's sha256). A classifier starts from it with
`--config.init_from=<name>` (or a path to such an .npz); `train.initial_params` checks the
hash and every shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

from absl import app
from absl import flags
from etils import epath
import flax
import numpy as np

from byteflax import cli
from byteflax import paths

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


def path_of(init_from: str) -> str | None:
  """The .npz a config.init_from names (a shipped name or a path), or None for a workdir."""
  if init_from.endswith(".npz"):
    return init_from
  shipped = os.path.join(PRETRAINED_DIR, f"{init_from}.npz")
  return shipped if os.path.exists(shipped) else None


def names() -> list[str]:
  """The shipped encoders' names."""
  if not os.path.isdir(PRETRAINED_DIR):
    return []
  return sorted(n[:-4] for n in os.listdir(PRETRAINED_DIR) if n.endswith(".npz"))


def sha256(path: str) -> str:
  """A file's sha256 (hex), read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def load(path: str) -> dict[str, np.ndarray]:
  """Flat {"module/.../name": float32 array} of an encoder file, after checking it against
  the sha256 in the manifest beside it."""
  manifest_path = path[:-4] + ".json"
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"No pretrained encoder {path}; shipped: {names()}.")
  if not epath.Path(manifest_path).exists():
    raise FileNotFoundError(f"{path} has no manifest {manifest_path}; write both with "
                            "python -m byteflax.pretrained.")
  expected = json.loads(epath.Path(manifest_path).read_text())["sha256"]
  if sha256(path) != expected:
    raise ValueError(f"{path} does not match the sha256 in {manifest_path} (corrupt or "
                     "replaced); write it again with python -m byteflax.pretrained.")
  with paths.open_npz(path) as arrays:
    return {key: arrays[key].astype(np.float32) for key in arrays.files}


def write(workdir: str, name: str, out_dir: str = PRETRAINED_DIR,
          corpus_dir: str | None = None) -> dict[str, object]:
  """Writes <out_dir>/<name>.npz and .json from the newest checkpoint of an encoder-decoder
  pretraining run; returns the manifest."""
  # pylint: disable=g-import-not-at-top  (TensorFlow / SeqIO, not needed to load)
  from byteflax import train
  config = train.run_config(workdir)
  if not train.is_encoder_decoder_run(workdir):
    raise ValueError(f"{workdir} is not an encoder-decoder (pretraining) run.")
  variables, step = train.load_variables(workdir, train.Trainer(config, training=False),
                                     ("params",))
  encoder = flax.traverse_util.flatten_dict(variables["params"]["encoder"], sep="/")
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"{name}.npz"
  paths.write_npz(path, **{k: np.asarray(v, np.float16) for k, v in encoder.items()})
  evaluation = {}
  eval_path = epath.Path(workdir) / "eval.json"
  if eval_path.exists():
    evaluation = json.loads(eval_path.read_text())
  corpus = {}
  corpus_dir = corpus_dir or config.data.get("corpus_dir")
  corpus_manifest = epath.Path(corpus_dir) / "manifest.json" if corpus_dir else None
  if corpus_manifest and corpus_manifest.exists():
    full = json.loads(corpus_manifest.read_text())
    corpus = {key: full[key] for key in ("command", "created", "removed", "train_by_source",
                                         "train_by_language")}
  manifest = {"name": name, "sha256": sha256(path), "bytes": path.stat().length,
              "dtype": "float16", "num_params": int(sum(v.size for v in encoder.values())),
              "step": int(step), "workdir": workdir,
              "command": " ".join(["python -m byteflax.pretrained", *sys.argv[1:]]),
              "model_name": config.model_name,
              "encoder_config": json.loads(config.model.encoder.to_json()),
              "evaluation": evaluation, "corpus": corpus}
  (out / f"{name}.json").write_text(json.dumps(manifest, indent=2))
  return manifest


@cli.clean_input_errors
def main(argv):
  del argv  # Unused.
  args = flags.FLAGS
  manifest = write(args.workdir, args.name, args.out_dir, args.corpus_dir)
  print(f"Wrote {args.out_dir}/{args.name}.npz ({manifest['bytes'] / 2**20:.1f} MiB, "
        f"{manifest['num_params']:,} parameters, step {manifest['step']}).")


if __name__ == "__main__":
  # Defined here, not at import: byteflax.train imports this module, and byteflax.main
  # has its own --workdir.
  flags.DEFINE_string("workdir", None, "The pretraining run's workdir.", required=True)
  flags.DEFINE_string("name", None, "The encoder's name (file stem).", required=True)
  flags.DEFINE_string("out_dir", PRETRAINED_DIR, "Where to write it.")
  flags.DEFINE_string("corpus_dir", None,
                      "The corpus it saw (default: the run's data.corpus_dir).")
  app.run(main)
