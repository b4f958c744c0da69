"""Writing a benchmark's results: one JSON file and, optionally, its plot, in one folder."""

from collections.abc import Callable
import json
import os
import platform

# CPU features that int8 kernels (XNNPACK's among them) use for their dot products: whether
# an int8 model beats float32 on a CPU depends on them, so latencies are read beside them.
INT8_DOT_PRODUCT_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def machine(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """The CPU a benchmark ran on: {"cpus", "platform", "cpu" (its model name), "features"
  (the INT8_DOT_PRODUCT_FEATURES it has, plus avx2 / avx512f)}, read off Linux's `cpuinfo`;
  without that file the model name is platform.processor()'s and features is empty."""
  model, features = platform.processor(), set()
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
          model = value.strip()
        elif key.strip() in ("flags", "Features"):
          features.update(value.split())
  except OSError:
    pass
  wanted = ("avx2", "avx512f", *INT8_DOT_PRODUCT_FEATURES)
  return {"cpus": os.cpu_count(), "platform": platform.platform(), "cpu": model,
          "features": [name for name in wanted if name in features]}


def write_results(out: str, name: str, results: object,
                  plot: Callable[[object, str], None] | None = None) -> list[str]:
  """Writes `results` to <out>/<name>.json and, given `plot(results, path)`, <out>/<name>.png;
  creates `out` if needed and returns the paths written."""
  os.makedirs(out, exist_ok=True)
  paths = [os.path.join(out, f"{name}.json")]
  with open(paths[0], "w") as f:
    json.dump(results, f, indent=2)
  if plot is not None:
    paths.append(os.path.join(out, f"{name}.png"))
    plot(results, paths[1])
  return paths


def report(results: object, table: str, out: str | None, name: str,
           plot: Callable[[object, str], None] | None = None) -> None:
  """Prints a benchmark's `table` and, given an `out` folder, writes `results` there
  (`write_results`) and prints the paths written."""
  print(table)
  if out:
    print("wrote", *write_results(out, name, results, plot))
