#!/bin/bash
# Device run: full-budget toxic-comment runs of the bundle in .gpu/toxic (3 seeds each),
# concurrently on one GPU. RUNS names them (default: session 8's three); DEADLINE stops them.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.28}
nvidia-smi --query-gpu=name,memory.used --format=csv
python3 -c "import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())"
for run in ${RUNS:-scratch tfidf minilm}; do
  python3 -m benchmarks.accelerator_fit fit --bundle=.gpu/toxic --name=$run --out=/tmp/fit/$run \
      --seeds=0,1,2 --deadline_s=${DEADLINE:-400} > /tmp/fit_$run.log 2>&1 &
done
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; tail -n 3 /tmp/fit_*.log
wait
for run in ${RUNS:-scratch tfidf minilm}; do
  cp /tmp/fit_$run.log /tmp/fit/$run/fit.log 2>/dev/null
  tar czf $OUT/${run}_a.tgz -C /tmp/fit/$run --exclude=seed_2.msgpack . 2>/dev/null
  tar czf $OUT/${run}_b.tgz -C /tmp/fit/$run seed_2.msgpack 2>/dev/null
  grep -v "^I\|^W\|^E0" /tmp/fit_$run.log | tail -n 8
done
ls -la $OUT
