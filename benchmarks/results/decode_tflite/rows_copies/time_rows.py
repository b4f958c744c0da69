"""decode_step latency of two exports of one checkpoint, timed in turn (session 11).

"before": python -m byteflax.export_seq2seq of /tmp/pretrain_corpus in session 10 (encoder
outputs repeated per row with broadcast_to); "after": the same command in session 11
(concatenated copies). Output: timings.txt.
"""
import time, numpy as np
from ai_edge_litert import interpreter as litert
files = {"before": "/tmp/pretrain_corpus/export", "after": "/tmp/s17/s2s_new"}
for q in ["seq2seq_float.tflite", "seq2seq_int8.tflite"]:
  for key in ["decode_step_256_rows_1", "decode_step_256_rows_4"]:
    runners, inputs = {}, {}
    for name, d in files.items():
      r = litert.Interpreter(model_path=f"{d}/{q}", num_threads=1).get_signature_runner(key)
      det = r.get_input_details()
      rng = np.random.default_rng(0)
      x = {}
      for k, v in det.items():
        shape, dtype = v["shape"], v["dtype"]
        if k == "position": x[k] = np.array(16, dtype)
        elif dtype == np.bool_: x[k] = np.ones(shape, dtype)
        elif np.issubdtype(dtype, np.integer): x[k] = np.full(shape, 70, dtype)
        else: x[k] = rng.standard_normal(shape).astype(dtype) * 0.1
      runners[name], inputs[name] = r, x
    out = {n: runners[n](**inputs[n])["logits"] for n in files}
    diff = np.abs(out["before"] - out["after"]).max()
    times = {n: [] for n in files}
    for i in range(400):
      for n in (files if i % 2 == 0 else list(reversed(list(files)))):
        t = time.perf_counter(); runners[n](**inputs[n]); times[n].append(time.perf_counter() - t)
    print(q, key, " ".join(f"{n} {1000*np.median(v[20:]):.3f} ms" for n, v in times.items()), f"max|dlogit| {diff:.1e}", flush=True)
