r"""Span-corruption pretraining of the default ByteQRNN encoder with a small decoder.

  python -m byteflax.main --config=configs/pretrain_fortunes.py --workdir=/tmp/pretrain
  # Then fine-tune the classifier from its encoder (labels only, as docs/pretraining.md):
  python -m byteflax.main --config=configs/byteqrnn_toxicity.py:scratch --workdir=/tmp/finetune \
      --config.init_from=/tmp/pretrain

The encoder is configs/byteqrnn_toxicity.py's model (embed 128 -> GBST -> 3 bidirectional
QRNN layers), so its embed / GBST / encoder params load into that classifier; the decoder
is 2 MAtt layers of width 128. Task `span_corruption_fortunes_en`: ByT5 span corruption
(15% noise, mean span 20 bytes) over the texts of the train split of
`fortunes_offensive_en`, so the classifier's validation and test texts stay unseen.
Optimizer, quantization, mesh and checkpointing are the classifier config's.

Pretraining data: any registered span-corruption task or mixture (`--config.data.task=`,
see `python -m byteflax.main --list_tasks`, e.g. span_corruption_mc4), or local text files
(`--config.data.train_path=<globs>`, `--config.data.text_format=lines|fortunes|files`), or
a corpus built by `python -m byteflax.corpus` (`--config.data.corpus_dir=DIR`,
configs/pretrain_corpus.py).

Variants (`:<arg>`, comma-separated):
  causal   a standard causal self-attention decoder (KV cache) instead of MAtt.
  smoke    a tiny model and a few steps, for tests and debugging.
Measured: docs/pretraining.md.
"""

import ml_collections
from ml_collections import config_dict

from configs import byteqrnn_toxicity

VARIANTS = ("causal", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set(arg.split(",")) if arg else set()
  if args - set(VARIANTS):
    raise ValueError(f"Unknown config variant {arg!r}; choose from {VARIANTS}.")
  # `scratch`: no distillation teacher (span corruption has no labels to distil).
  config = byteqrnn_toxicity.get_config("scratch,smoke" if "smoke" in args else "scratch")
  config.data.task = "span_corruption_fortunes_en"
  # Your own text instead: --config.data.train_path='corpus/*.txt,more/**/*.md' (globs;
  # a bucket's too, gs://b/texts/*.txt) read as `text_format` documents: "lines",
  # "fortunes" or "files" (one per file).
  config.data.text_format = "lines"
  # Or the offline multilingual corpus that `python -m byteflax.corpus --out=DIR` builds
  # (tasks.pretraining.register_corpus; configs/pretrain_corpus.py).
  config.data.corpus_dir = config_dict.placeholder(str)
  encoder = config.model
  # Pretraining sees each text a few times at most: no regularisation. Neither rate
  # changes a parameter shape, so the fine-tuned classifier uses its own.
  encoder.update(dropout_rate=0.0, zoneout=0.0)
  config.model_name = "byte_encoder_decoder"
  config.model = ml_collections.ConfigDict(dict(
      encoder_name="byte_qrnn",
      encoder=encoder,
      decoder=dict(
          attention_kind="causal" if "causal" in args else "matt",
          num_layers=2,
          dim=128,
          num_heads=4,
          mlp_dim=256,
          mlp_activation="gelu",
          dropout_rate=0.0,
      ),
  ))
  if "smoke" in args:
    config.model.decoder.update(num_layers=1, dim=32, num_heads=2, mlp_dim=64)
  config.total_steps = 1000 if "smoke" not in args else config.total_steps
  # The pretraining task has no test split.
  config.evals = ml_collections.ConfigDict(dict(
      validation=dict(split="validation", every_steps=config.evals.validation.every_steps)))
  # The newest checkpoint is the pretrained model (its loss falls for as long as it trains).
  config.checkpoint.select_by = ""
  return config
