"""The machine a latency was measured on: whether an int8 model beats float32 on a CPU
depends on its instructions (docs/benchmarks.md), so every latency is read beside them."""

import os
import platform

# The instructions that int8 kernels (XNNPACK's among them) take their dot products from.
INT8_DOT_PRODUCT_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def describe(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """The CPU this process runs on: {"cpus", "platform", "cpu" (its model name), "features"
  (the INT8_DOT_PRODUCT_FEATURES it has, plus avx2 / avx512f)}, read off Linux's `cpuinfo`;
  without a model name there (ARM's cpuinfo has none) it is platform.processor()'s or the
  architecture's, and without the file features is empty."""
  model, features = platform.processor() or platform.machine(), set()
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
