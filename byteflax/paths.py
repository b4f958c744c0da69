"""Paths that may name a bucket: on a TPU VM a run's workdir is gs://BUCKET/run.

What a run reads and writes (its workdir's checkpoints, config.json, metrics.jsonl,
eval.json and teacher file; data files, a corpus manifest, init_from, exports) goes through
`etils.epath`, orbax's own path library, which reaches gs://, s3:// and local disk alike.
`os.path` and `open()` would not: to them gs://b/run is the local directory
<cwd>/gs:/b/run, so each TPU worker would write its own disk and the bucket would stay
empty.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import io
import os

from etils import epath
import numpy as np


def is_uri(path: epath.PathLike) -> bool:
  """Whether `path` names a remote file system (gs://b/run), not local disk."""
  return "://" in str(path)


def absolute(path: epath.PathLike) -> epath.Path:
  """`path` as an epath.Path: a local path made absolute and normal (orbax needs one; task
  names hash it), a URI as it is (`epath.Path.absolute` would make gs://b/run
  <cwd>/gs:/b/run too)."""
  return epath.Path(path if is_uri(path) else os.path.abspath(path))


@contextlib.contextmanager
def open_npz(path: epath.PathLike) -> Iterator[np.lib.npyio.NpzFile]:
  """np.load of an .npz on local disk or in a bucket (np.load opens a path name locally)."""
  with epath.Path(path).open("rb") as f, np.load(f) as arrays:
    yield arrays


def write_npz(path: epath.PathLike, **arrays: np.ndarray) -> None:
  """np.savez_compressed to `path`, on local disk or in a bucket. Built in memory: zipfile
  seeks back over what it wrote, which a bucket's write stream (tf.io.gfile) cannot."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  epath.Path(path).write_bytes(buffer.getvalue())
