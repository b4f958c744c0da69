"""Test-session setup: one persistent XLA compilation cache for every test and subprocess.

Most of a CLI test's time went to XLA compiling the same small programs again in each
subprocess: a `:smoke` training run through `byteflax.main` took 55 s of CPU cold and 18 s
with this cache warm. The cache lives in pytest's cache directory
(`.pytest_cache/d/jax_compilation_cache`, kept between runs; `pytest --cache-clear` empties
it) and reaches the subprocesses through the environment, where JAX reads its settings.
JAX keys each entry by the program, the JAX / XLA versions, the devices and the flags, so a
stale entry is never used. A cache directory set by the caller is left as it is.
"""

import os

_CACHE_DIR = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
  cache = getattr(config, "cache", None)  # None under `-p no:cacheprovider`.
  if cache is None or _CACHE_DIR in os.environ:
    return
  os.environ[_CACHE_DIR] = str(cache.mkdir("jax_compilation_cache"))
  # Every compiled program is kept, however quick to compile: the tests compile thousands
  # of small ones, again in each subprocess.
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  # No size limit: with one, JAX locks the directory and re-reads every entry's access time
  # on each write, quadratic in the thousands of entries a test run makes. Without the lock
  # a process may read an entry another is still writing: a cut-off entry fails to
  # decompress, and JAX treats an entry it cannot read as a miss (it warns and compiles).
