r"""Span-corruption pretraining of ByteQRNN's encoder on the offline multilingual corpus.

  python -m byteflax.corpus --out=/tmp/corpus       # ~10 min on 2 CPU cores
  python -m byteflax.main --config=configs/pretrain_corpus.py --workdir=/tmp/pretrain_corpus \
      --config.data.corpus_dir=/tmp/corpus
  # Then fine-tune the classifier from its encoder:
  python -m byteflax.main --config=configs/byteqrnn_toxicity.py:scratch --workdir=/tmp/ft \
      --config.init_from=/tmp/pretrain_corpus

The model and objective are configs/pretrain_fortunes.py's (the classifier's encoder, a
2-layer MAtt decoder, ByT5 span corruption); the data is every source and language of the
corpus (toxic comments' train split, fortunes, man pages, the Debian handbook, GCIDE: see
byteflax/corpus.py), a SeqIO mixture at rates bytes ** 0.3 per language. Its documents
never include a validation or test text of the classification tasks.

Budget: 2,000 steps of 64 chunks of up to 256 bytes (~28 M input bytes), the size of run two
CPU cores do in about 1-2 hours. Measured here: 53 min on cores shared with other jobs,
validation loss 2.305 nats per target byte (docs/pretraining.md); its encoder ships as
`--config.init_from=byteqrnn_corpus`.
Variants: `:smoke` (tiny model, a few steps), `:causal` (a causal decoder instead of MAtt).
"""

import ml_collections

from configs import pretrain_fortunes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = pretrain_fortunes.get_config(arg)
  config.data.task = ""  # The corpus mixture; data.corpus_dir names the corpus.
  if "smoke" not in (arg or ""):
    # Chunks of 256 bytes: the comments the encoder is for are short (median 155 bytes),
    # and a step costs a quarter of a 1,024-byte one; the encoder reads any length after.
    config.data.update(max_length=256, length_buckets=(128,), batch_size=64)
    config.total_steps = 2000
    config.log_every_steps = 20
    config.evals.validation.every_steps = 500
  return config
