"""launch/ dry runs: the exact commands a TPU pod or multi-GPU launch would run."""

import os
import shlex
import subprocess
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry_run(module, *args):
  result = subprocess.run([sys.executable, "-m", module, "--dry_run", *args], cwd=_REPO,
                          capture_output=True, text=True, timeout=120)
  return result, [shlex.split(line) for line in result.stdout.splitlines()]


def test_tpu_dry_run_creates_installs_runs_on_every_worker_and_deletes():
  result, commands = _dry_run(
      "launch.tpu", "--project=proj", "--zone=us-central2-b", "--accelerator_type=v4-32",
      "--name=pod", "--config=configs/byteqrnn_toxicity.py", "--workdir=gs://bucket/run",
      "--", "--config.optim.learning_rate=1e-3")
  assert result.returncode == 0, result.stderr
  verbs = [c[4] if c[0] == "gcloud" else c[0] for c in commands]
  assert verbs == ["create", "git", "scp", "ssh", "ssh", "delete"]
  gcloud = [c for c in commands if c[0] == "gcloud"]
  assert all(c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and "--project=proj" in c
             and "--zone=us-central2-b" in c for c in gcloud)
  # Every command targets the named VM; scp copies the `git archive` tarball to its home.
  assert [c[5] for c in gcloud if c[4] != "scp"] == ["pod"] * 4
  assert commands[2][5:7] == [commands[1][-2].split("=")[1], "pod:~/"]
  assert "--accelerator-type=v4-32" in commands[0]
  assert all("--worker=all" in c for c in commands[2:5])
  train = next(a for a in commands[4] if a.startswith("--command="))
  assert shlex.split(train.split("&&")[1]) == [
      "python3", "-m", "byteflax.main", "--distributed",
      "--config=configs/byteqrnn_toxicity.py", "--workdir=gs://bucket/run",
      "--config.optim.learning_rate=1e-3"]
  assert commands[-1][-3] == "--quiet"


def test_tpu_keep_leaves_the_vm_and_missing_or_local_workdirs_are_clear_errors():
  base = ["--project=p", "--zone=z", "--config=c.py", "--workdir=gs://b/r"]
  result, commands = _dry_run("launch.tpu", *base, "--keep")
  assert result.returncode == 0 and "delete" not in [c[4] for c in commands if len(c) > 4]
  result, commands = _dry_run("launch.tpu", *base[:2], "--config=c.py")
  assert result.returncode != 0 and not commands
  assert "--config and --workdir are required" in result.stderr
  # A workdir on the VM's own disk would be deleted with the VM.
  local = [*base[:3], "--workdir=/tmp/run"]
  result, commands = _dry_run("launch.tpu", *local)
  assert result.returncode != 0 and not commands
  assert "--workdir=/tmp/run is on the TPU VM's own disk" in result.stderr
  assert _dry_run("launch.tpu", *local, "--keep")[0].returncode == 0


def test_gpu_dry_run_starts_one_process_per_gpu_with_distinct_ids():
  result, commands = _dry_run(
      "launch.gpu", "--hosts=node1,node2", "--gpus_per_host=2", "--coordinator_port=999",
      "--code_dir=/code", "--config=c.py", "--workdir=/shared/run", "--", "--config.seed=3")
  assert result.returncode == 0, result.stderr
  assert [c[:2] for c in commands] == [["ssh", "node1"]] * 2 + [["ssh", "node2"]] * 2
  remote = [shlex.split(c[2].split(" && ", 1)[1]) for c in commands]
  assert all(c[2].startswith("cd /code && ") for c in commands)
  assert [r[1] for r in remote] == ["CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"] * 2
  assert [r[r.index("--distributed") + 3] for r in remote] == [
      f"--process_id={i}" for i in range(4)]
  for r in remote:
    assert r[r.index("--distributed") + 1:r.index("--distributed") + 3] == [
        "--coordinator_address=node1:999", "--num_processes=4"]
    assert r[-3:] == ["--config=c.py", "--workdir=/shared/run", "--config.seed=3"]


def test_gpu_rejects_localhost_among_several_hosts():
  result, commands = _dry_run("launch.gpu", "--hosts=localhost,node2", "--gpus_per_host=1",
                              "--config=c.py", "--workdir=/w")
  assert result.returncode != 0 and not commands
  assert "not localhost" in result.stderr
