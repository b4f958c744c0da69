"""Writing a benchmark's results: one JSON file and, optionally, its plot, in one folder."""

from collections.abc import Callable
import json
import os


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
