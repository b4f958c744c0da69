"""Written by python -m byteflax.search: validation ROC AUC 0.8948 after 300 proxy steps at 0.838 ms per median text (int8 TFLite, one thread), within a 1.3 ms budget.

  python -m byteflax.main --config=/tmp/search_toxic/chosen_config.py --workdir=/tmp/chosen
"""

import importlib.util

BASE_CONFIG = '/work/main/configs/byteqrnn_toxicity.py'
BASE_ARG = None
OVERRIDES = {}  # The search command's --config.* flags.
MODEL = {'embed_dim': 64, 'gbst_max_block_size': 2, 'gbst_downsample_rate': 2, 'qrnn_layers': 1, 'qrnn_features': 96, 'qrnn_kernel_size': 2}  # The chosen config.model fields.


def get_config(arg=None):
  spec = importlib.util.spec_from_file_location("searched_config", BASE_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or BASE_ARG)
  for dotted, value in OVERRIDES.items():
    *parents, name = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  config.model.update(MODEL)
  config.init_from = None  # A pretrained encoder has the default architecture's shapes.
  return config
