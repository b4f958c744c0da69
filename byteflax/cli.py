"""What the command lines do with an error the user can fix: one line, not a traceback.

A data file's bad line, or too little text for the teacher, stops a run with a message that
names the file, the line and the fix; forty lines of traceback above it would bury it.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import sys
from typing import TypeVar

_Result = TypeVar("_Result")


class InputError(ValueError):
  """Input the user can fix (a data file, too little text for a model): the message says
  what is wrong and what to change; `clean_input_errors` prints it without a traceback."""


def clean_input_errors(main: Callable[..., _Result]) -> Callable[..., _Result]:
  """`main` (a CLI's body) that exits with status 1 and `Error: <message>` (and the notes
  added to the error on its way up, one per line) on an `InputError`."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs) -> _Result:
    try:
      return main(*args, **kwargs)
    except InputError as error:
      sys.exit("\n".join([f"Error: {error}", *getattr(error, "__notes__", ())]))

  return wrapped
