r"""Transformer classifiers on the toxicity tasks: GBST + transformer, GBST + funnel, raw bytes.

  pip install -e .
  python -m byteflax.main --config=configs/transformer_toxicity.py:funnel --workdir=/tmp/funnel

The argument is a model, optionally followed by options, comma-separated:
  transformer     (default) ByteTransformer: embed 192 -> GBST (blocks 1-4, downsample 4) ->
                  4 pre-LN layers (3 heads, GELU MLP 512, rotary positions) -> attention
                  pooling -> sigmoid labels; 1.44 M parameters, like ByteQRNN's 1.51 M.
  funnel          ByteFunnelTransformer: the same layers as blocks (2, 2), queries mean-pooled
                  by 2 between them (same parameters; 0.76x the FLOPs at 1024 bytes).
  raw             the ByT5-style control: the same transformer on every byte, no GBST.
  fortunes        the English fortunes task (as ByteQRNN's `:fortunes`) instead of the
                  184k toxic comments.
  civil_comments  TFDS civil_comments (toxicity >= 0.5) instead of the toxic comments:
                  longer training, validation every 5,000 steps. TFDS downloads it on
                  first use; not run on this repository's machine yet.
  smoke           a ~1 minute run for tests and debugging (tiny model, few steps).
e.g. `--config=configs/transformer_toxicity.py:raw,civil_comments`.
The task is ByteQRNN's default, the 184k toxic comments, for 1,000 steps (ByteQRNN's cap
until session 52, when a faster CPU step raised it to 1,500; docs/results.md compares the
two models at 1,000).

Everything but the model (data, optimizer, quantization, checkpoints, evals) is
configs/byteqrnn_toxicity.py:scratch's (labels only, no distillation), so the encoders are
compared on equal terms; the learning rate is lower (1e-3), as transformers usually need.

Measured on the fortunes, on 2 shared CPU cores (docs/benchmarks.md, "Encoder benchmark":
`python -m benchmarks.encoders`, 300 of the `:fortunes` 2,000 steps, examples cut to 512
bytes): transformer / funnel / raw train and evaluate in 199 / 180 / 844 s to test ROC AUC
0.699 / 0.697 / 0.688. The full runs and the civil_comments runs have not been timed yet.
"""

import ml_collections

from configs import byteqrnn_toxicity

GBST = dict(gbst_max_block_size=4, gbst_downsample_rate=4, gbst_conv_kernel_size=5,
            gbst_score_calibration=False)
# Argument -> (config.model_name, what config.model adds to the shared transformer fields).
MODELS = {
    "transformer": ("byte_transformer", dict(num_layers=4, **GBST)),
    "funnel": ("byte_funnel_transformer", dict(block_layers=(2, 2), pool_stride=2,
                                               pool_kind="mean", **GBST)),
    "raw": ("raw_byte_transformer", dict(num_layers=4)),
}
OPTIONS = ("fortunes", "civil_comments", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model, *options = (arg or "transformer").split(",")
  if model not in MODELS or not set(options) <= set(OPTIONS):
    raise ValueError(f"Unknown config argument {arg!r}; use a model from {sorted(MODELS)} "
                     f"followed by options from {OPTIONS}, comma-separated.")
  # Labels only, like the ByteQRNN (`:scratch`) the encoder benchmark compares them with.
  config = byteqrnn_toxicity.get_config(
      ",".join(["scratch", *(o for o in options if o in ("fortunes", "smoke"))]))
  config.model_name, encoder = MODELS[model]
  config.model = ml_collections.ConfigDict(dict(
      embed_dim=192,
      num_heads=3,
      mlp_dim=512,
      mlp_activation="gelu",
      dropout_rate=0.1,
      pooling="attention",
      **encoder,
  ))
  config.optim.learning_rate = 1e-3
  config.max_steps = 1000  # The budget of its measured rows (docs/results.md).

  if "civil_comments" in options:
    config.data.task = "civil_comments"
    # ~1.8 M training comments: 40k steps of 32 is under one epoch.
    config.total_steps = 40_000
    config.optim.warmup_steps = 1_000
    config.checkpoint.every_steps = 2_000
    config.evals.validation.every_steps = 5_000
  if "smoke" in options:
    config.model.update(embed_dim=32, num_heads=2, mlp_dim=64)
    if "num_layers" in encoder:
      config.model.num_layers = 2
    else:
      config.model.block_layers = (1, 1)
  return config
