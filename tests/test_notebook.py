"""The Colab quickstart notebook, executed top to bottom in a real Jupyter kernel."""

import os
import re

import nbclient
import nbformat
import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOTEBOOK = os.path.join(_REPO, "notebooks", "byteflax_quickstart.ipynb")


@pytest.mark.slow
def test_quickstart_notebook_trains_exports_and_runs_tflite(tmp_path):
  notebook = nbformat.read(_NOTEBOOK, as_version=4)
  parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
  assert len(parameters) == 1
  # The smoke config for a short budget; the notebook runs inside this checkout, where byteflax
  # is installed, so its install cell clones and installs nothing.
  parameters[0].source = (f'REPO_URL = "unused: running inside a checkout"\n'
                          f'CONFIG = "configs/byteqrnn_toxicity.py:smoke"\n'
                          f'STEPS = 40\nWORKDIR = "{tmp_path / "run"}"\n')
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": _REPO}}).execute()
  text = "\n".join(output.get("text", "") for cell in notebook.cells
                   for output in cell.get("outputs", []))
  assert f"byteflax from {_REPO}" in text
  aucs = dict(re.findall(r"test ROC AUC \((.+?)\): ([0-9.]+)", text))
  assert set(aucs) == {"JAX", "JAX, from eval.json", "LiteRT, model_float.tflite",
                       "LiteRT, model_int8.tflite"}, text
  # The float TFLite file is the JAX model: same AUC on the same test texts.
  assert abs(float(aucs["LiteRT, model_float.tflite"]) - float(aucs["JAX"])) < 0.005, aucs
  assert 0 <= float(aucs["LiteRT, model_int8.tflite"]) <= 1
  assert len(re.findall(r"P\(offensive\) = 0\.\d{3}", text)) == 2
  for name in ("model_float.tflite", "model_int8.tflite"):
    assert os.path.exists(tmp_path / "run" / "export" / name)
