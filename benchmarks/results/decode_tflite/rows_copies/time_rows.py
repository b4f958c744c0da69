"""decode_step latency of two exports of one checkpoint, timed in turn (session 11).

"before": python -m byteflax.export_seq2seq of /tmp/pretrain_corpus in session 10 (encoder
outputs repeated per row with broadcast_to); "after": the same command in session 11
(concatenated copies). Output: timings.txt.
"""
import numpy as np
from ai_edge_litert import interpreter as litert
from byteflax import export
files = {"before": "/tmp/pretrain_corpus/export", "after": "/tmp/s17/s2s_new"}
for q in ["seq2seq_float.tflite", "seq2seq_int8.tflite"]:
  for key in ["decode_step_256_rows_1", "decode_step_256_rows_4"]:
    runners = {name: litert.Interpreter(model_path=f"{d}/{q}", num_threads=1)
               .get_signature_runner(key) for name, d in files.items()}
    rng = np.random.default_rng(0)
    x = {}  # One set of inputs: both files have the same signature.
    for k, v in runners["before"].get_input_details().items():
      shape, dtype = v["shape"], v["dtype"]
      if k == "position": x[k] = np.array(16, dtype)
      elif dtype == np.bool_: x[k] = np.ones(shape, dtype)
      elif np.issubdtype(dtype, np.integer): x[k] = np.full(shape, 70, dtype)
      else: x[k] = rng.standard_normal(shape).astype(dtype) * 0.1
    out = {n: runners[n](**x)["logits"] for n in files}
    diff = np.abs(out["before"] - out["after"]).max()
    # byteflax.export.time_each alternates the two files on every call.
    times = export.time_each({n: (lambda x, r=runners[n]: r(**x)) for n in files},
                             [x] * 400, warmup=20)
    print(q, key, " ".join(f"{n} {np.median(v):.3f} ms" for n, v in times.items()), f"max|dlogit| {diff:.1e}", flush=True)
