r"""ByteQRNN toxicity classifier on the 184k real toxic comments (task toxic_comments_en).

The default job: embed -> GBST (blocks 1-4, downsample 2) -> 3 bidirectional QRNN layers ->
attention pooling -> one sigmoid label. Embedding, GBST and QRNN layers start from the
encoder pretrained on the offline multilingual corpus that ships in the repository
(init_from = "byteqrnn_corpus", docs/pretraining.md); AdamW fine-tunes everything on the
labels and, with weight alpha 0.8, on a TF-IDF word-n-gram teacher's out-of-fold log-odds,
which the command fits into the workdir first (~3 min). The budget follows the data:
5 epochs, capped at max_steps = 1,500 steps of batch 32 (0.33 epochs of the comments).

  pip install -e .
  python -m byteflax.main --config=configs/byteqrnn_toxicity.py --workdir=/tmp/byteqrnn

Measured (docs/results.md), 1.51 M parameters: test ROC AUC 0.9656 at seed 0, in 20 min
on 2 idle CPU cores (the teacher's fit included); seeds 0-2: 0.9673 (0.9656-0.9687). At
1,000 steps (the cap until session 52): 0.9601; labels only, 3 seeds
each: 0.9586 from the shipped encoder, 0.9493 from
random weights (`:scratch`); distilled from random weights: 0.9520.
Running the same command again resumes from the newest checkpoint in --workdir.

Variants (`--config=configs/byteqrnn_toxicity.py:<arg>`, comma-separated):
  full          no step cap: 5 epochs (23,025 steps on the comments), for a GPU / TPU
                (three length buckets: padding costs an accelerator little). On 2 CPU
                cores: 3 epochs with the MiniLM teacher, ~2 h, test AUC 0.9857
                (0.9853-0.9863) over seeds 0-2 (docs/results.md has the command).
                `--config.data.train_max_length=384` trains on the first 384 bytes
                (an epoch in 25 min, not ~40; docs/training.md): 5 epochs so, 2.1 h,
                test AUC 0.9868 (0.9863-0.9870) over seeds 0-2.
  fortunes      the English fortunes (offensive vs clean fortune-cookie texts): the shipped
                encoder taught by a fine-tuned MiniLM on the fortunes, on 4 augmented
                copies of each and on 20,000 toxic comments (the teacher's log-odds and
                features ship in benchmarks/results/), 6,000 steps (2/3 of each batch
                transfer texts), ~40 min on 2 idle CPU cores: test AUC 0.8711
                (0.8651-0.8742) over seeds 0-2 (docs/distillation.md). With `scratch`:
                random weights, labels only, 2,000 steps. `multilingual` keeps the TF-IDF
                char teacher, 2,000 steps.
  multilingual  English + Spanish + Italian fortunes (needs the Debian packages
                fortunes-es fortunes-it fortunes-it-off).
  qat           quantization-aware fine-tuning (8-bit fake quantization, byteflax/quant.py)
                of the float run in /tmp/byteqrnn (or --config.init_from=<its workdir>),
                for int8 export: python -m byteflax.export (docs/export.md).
  smoke         a ~1 minute run on the fortunes for tests and debugging (tiny model, few
                steps, no teacher).
  scratch       from random weights, on the labels alone (no pretrained encoder, no
                teacher): the baseline the pretrained encoder is measured against.
  early_exit    a classification exit after every QRNN layer, trained jointly; choose the
                exit thresholds on validation with python -m byteflax.early_exit
                (docs/early_exit.md).
Any field can be overridden, e.g. `--config.optim.learning_rate=1e-3`, or your own data:
`--config.data.train_path=train.csv --config.data.test_path=test.csv` (CSV, TSV, JSONL, JSON or
Parquet with a `text` column and a `label` column; see `data.text_key` / `data.label_keys`);
the teacher is then fit on those files and the budget follows their size. Another architecture (e.g.
`--config.model.qrnn_layers=2`) does not fit the shipped encoder: add `--config.init_from=`
to start it from random weights.
"""

import os

import ml_collections
from ml_collections import config_dict

# A fine-tuned MiniLM's log-odds and pooled features (64 principal components, int8) for
# the English fortunes, their `augmented:4` transfer texts and `toxic_comments_en:20000`
# (benchmarks/minilm_teacher.py fit --features on 2 CPU cores, ~1 h; docs/distillation.md).
FORTUNES_TEACHER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results",
    "fortunes_transfer", "cpu_teacher_features", "teacher_fortunes_offensive_en.npz")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = ("fortunes", "multilingual", "full", "qat", "smoke", "scratch", "early_exit")
  args = set(arg.split(",")) if arg else set()
  if args - set(variants):
    raise ValueError(f"Unknown config variant {arg!r}; choose from {variants}.")
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.task = "toxic_comments_en"
  if "fortunes" in args or "smoke" in args:
    config.data.task = "fortunes_offensive_en"
  if "multilingual" in args:
    config.data.task = "fortunes_offensive_multilingual"
  # A user's own CSV / JSONL / Parquet files replace `task` when train_path is set.
  config.data.train_path = config_dict.placeholder(str)
  config.data.validation_path = config_dict.placeholder(str)
  config.data.test_path = config_dict.placeholder(str)
  config.data.text_key = "text"
  config.data.label_keys = ("label",)
  # A byte that is not UTF-8 in a file reads as U+FFFD; "cp1252": as its Windows-1252
  # (Latin-1) character; "error": stops there.
  config.data.invalid_utf8 = "replace"
  # Labels that are class names (spam / ham): the one that reads as 1, every other as 0.
  config.data.positive_label = config_dict.placeholder(str)
  config.data.validation_fraction = 0.1  # Carved from train when no validation file.
  config.data.split_seed = 0
  config.data.max_length = 1024  # Bytes, EOS included; longer texts are truncated.
  # Training texts cut shorter (EOS included) train faster; evaluation, teacher and export
  # still read max_length. None: max_length. 384 keeps 71% of the comments' training bytes.
  config.data.train_max_length = config_dict.placeholder(int)
  # Batches are padded to the next boundary. On a CPU the padding costs its share of the
  # time, so boundaries ~1.5x apart: real bytes are 87% of the padded ones on the
  # comments' training split, against 74% with (128, 256, 512) (docs/design.md), for one
  # compilation per boundary. `:full` (GPU / TPU) and the fortunes keep three, as did every
  # result before session 52 (`--config.data.length_buckets="(128, 256, 512)"` batches as
  # they did).
  config.data.length_buckets = (64, 96, 128, 192, 256, 384, 512, 768)
  config.data.batch_size = 32
  config.data.eval_batch_size = 128
  config.data.shuffle_buffer_size = 20_000

  config.model_name = "byte_qrnn"
  config.model = ml_collections.ConfigDict(dict(
      embed_dim=128,
      gbst_max_block_size=4,
      gbst_downsample_rate=2,
      gbst_conv_kernel_size=5,
      gbst_score_calibration=False,
      qrnn_layers=3,
      qrnn_features=128,
      qrnn_kernel_size=3,
      qrnn_pooling="fo",
      bidirectional=True,
      zoneout=0.1,
      dropout_rate=0.2,
      pooling="attention",
      # Early exits (byteflax/early_exit.py): a pooling + head after every QRNN layer,
      # trained jointly; at inference a text stops at the first confident exit.
      early_exit="early_exit" in args,
      shared_exit_head=False,  # True: every exit uses the last layer's pooling and head.
      # Matryoshka: these prefixes of the pooled vector also classify, trained with nested
      # losses (e.g. (16, 32, 64, 128)); representation_dims picks one at inference.
      matryoshka_dims=(),
      representation_dims=config_dict.placeholder(int),
  ))
  # With early exits, the loss is the mean of the exits' losses weighted by these (one
  # per exit); None: by depth, (1, 2, 3).
  config.exit_loss_weights = config_dict.placeholder(tuple)

  # The budget follows the data: num_epochs passes over the training split, capped at
  # max_steps (None: no cap), unless total_steps is set (train.training_steps logs which).
  # The cap keeps the main command at ~20 min on 2 CPU cores; `:full` lifts it.
  config.total_steps = config_dict.placeholder(int)
  config.num_epochs = 5
  config.max_steps = config_dict.FieldReference(1500, field_type=int)
  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=2e-3,
      warmup_steps=200,
      schedule="cosine",
      end_learning_rate_factor=0.01,
      weight_decay=1e-4,
      b1=0.9,
      b2=0.98,
      grad_clip_norm=1.0,
      # e.g. 0.999: evaluate, select and export an exponential moving average of the
      # params (Polyak averaging) instead of the params themselves. None: off.
      ema_decay=config_dict.placeholder(float),
  ))

  # Fake quantization of every matmul / conv (fields: byteflax.quant.QuantConfig).
  config.quant = ml_collections.ConfigDict(dict(
      enabled=False,
      bits=8,
      weight_per_channel=True,
      weight_symmetric=True,
      act_symmetric=False,
      ema_decay=0.99,
      start_step=0,
  ))
  # Where the initial params come from; ignored once this run has checkpoints of its own.
  # A shipped pretrained encoder (a name in byteflax/pretrained/, or an .npz path: embed,
  # GBST and QRNN layers; pooling and head start at random), or a run's workdir (e.g. a
  # float run to fine-tune with quantization). None or "": random weights. The default
  # fine-tunes the encoder pretrained on the offline multilingual corpus
  # (docs/pretraining.md); it needs this default architecture.
  config.init_from = config_dict.placeholder(str)
  if not args & {"fortunes", "multilingual", "scratch", "smoke"}:
    config.init_from = "byteqrnn_corpus"

  # Distillation (byteflax/distill.py): alpha > 0 adds a teacher term to the loss, reading
  # the teacher's log-odds for every training example from teacher_path; when that is unset,
  # byteflax.main fits the teacher into <workdir>/teacher_<teacher>.npz first (~1 min).
  # From scratch the student's test AUC swings with the seed (0.744-0.800 over three); the
  # char-n-gram teacher (test AUC 0.855) lifts and steadies it (docs/distillation.md).
  config.distill = ml_collections.ConfigDict(dict(
      # A byteflax.baselines model: tfidf_word, tfidf_char, minilm. Words: on the 147k
      # comments char n-grams cost ~10x the fit time for +0.002 test AUC (0.987 vs 0.985).
      teacher="tfidf_word",
      teacher_path=config_dict.placeholder(str),
      # Teacher files (comma-separated) whose log-odds are averaged with the fitted
      # teacher's, e.g. a fine-tuned MiniLM's (benchmarks/minilm_teacher.py).
      average_with="",
      teacher_folds=5,  # Out-of-fold teacher logits: the teacher never saw the example.
      alpha=0.8,  # Weight of the teacher term; 0 trains on the labels alone.
      temperature=1.0,
      # The teacher term: "cross_entropy" with its probabilities at `temperature`, or
      # "logit_mse" on its log-odds (Tang et al., 2019; step.distillation_loss).
      soft_loss="cross_entropy",
      # Unlabelled transfer texts the teacher labels too (input_pipeline.transfer_ids),
      # comma-separated: "perturbed" (obfuscated copies of the training texts),
      # "augmented:K" (K copies with words dropped / replaced, n-gram spans) and/or other
      # tasks' names (":N" for N of their texts, seeded) and/or "corpus_<source>[:N]"
      # (English documents of an offline corpus source that the task lacks,
      # byteflax/corpus.py); "" for none. transfer_rate: their share of training examples.
      transfer="",
      transfer_rate=0.5,
      # Weight of a second teacher term: the student's pooled vectors keep the pairwise
      # similarities of the teacher's features (step.similarity_loss); needs a teacher file
      # with features (benchmarks/minilm_teacher.py fit --features). 0: logits only.
      feature_weight=0.0,
  ))

  config.log_every_steps = 100
  # The run's model is the checkpoint with the best validation ROC AUC among the evaluated
  # ones (every validation eval, and the last step): what the final evaluation, export and
  # classify read; resuming continues from the newest. select_by="" keeps the newest.
  config.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=500, keep=3, select_by="validation/auc", select_mode="max"))
  # Named evals, each every `every_steps` steps and every `every_epochs` epochs (so a small
  # file's short run still has a validation eval per epoch to select from); with both 0 only
  # at the end (test is not looked at earlier).
  config.evals = ml_collections.ConfigDict(dict(
      validation=dict(split="validation", every_steps=1000, every_epochs=1.0),
      test=dict(split="test", every_steps=0, every_epochs=0.0),
  ))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, model=1))

  if "fortunes" in args or "multilingual" in args:
    # 13.7k fortunes: 2,000 steps (4.7 epochs) and the char teacher, as measured (docs/results.md).
    config.max_steps = 2000
    config.distill.teacher = "tfidf_char"
    # The buckets every fortunes result was measured with. They also order the training
    # texts that the augmented transfer texts are drawn from (input_pipeline.transfer_ids),
    # so FORTUNES_TEACHER scored the copies this batching makes, not another's.
    config.data.length_buckets = (128, 256, 512)
  if "fortunes" in args and not args & {"scratch", "smoke", "qat"}:
    # The best recipe measured on the English fortunes (docs/distillation.md): the shipped
    # encoder learns from a fine-tuned MiniLM, whose logits for the fortunes, four augmented
    # copies of each (Tang et al.'s transfer set) and 20,000 toxic comments ship in
    # FORTUNES_TEACHER. The student's pooled vectors also keep the pairwise similarities of
    # the teacher's features: +0.008 test AUC at weight 1 (seeds 0-2), none at 2.
    config.init_from = "byteqrnn_corpus"
    config.distill.update(teacher="minilm_finetuned", teacher_path=FORTUNES_TEACHER,
                          transfer="augmented:4,toxic_comments_en:20000", feature_weight=1.0)
    # Transfer texts fill 2/3 of each batch, so 6,000 steps are still 4.66 labelled epochs
    # and show each transfer text ~1.7 times: +0.005 test AUC (seeds 0-2) over 4,000 steps
    # at rate 1/2 (docs/distillation.md).
    config.max_steps = 6000
    config.distill.transfer_rate = 0.6667
  if "full" in args:
    config.max_steps = None
    # An accelerator pays for a step, not its padding, and for each shape's compilation.
    config.data.length_buckets = (128, 256, 512)
  if "scratch" in args or "smoke" in args:
    config.distill.alpha = 0.0  # Labels only (smoke: no minute-long teacher fit).
  if "qat" in args:
    config.quant.update(enabled=True, start_step=50)  # Ranges settle before rounding.
    config.distill.alpha = 0.0  # Only adapts the float weights to rounding.
    config.init_from = "/tmp/byteqrnn"
    # Short and gentle: the float weights are already good, they only adapt to rounding.
    config.total_steps = 400
    config.optim.update(learning_rate=2e-4, warmup_steps=50)
  if "smoke" in args:
    config.model.update(embed_dim=32, qrnn_layers=1, qrnn_features=32)
    config.data.update(max_length=128, length_buckets=(64,), batch_size=16,
                       eval_batch_size=64)
    config.total_steps = 40
    config.optim.warmup_steps = 5
    config.log_every_steps = 10
    config.checkpoint.every_steps = 20
    config.evals.validation.every_steps = 20
  return config
