"""What the command lines do with an error the user can fix: one line, not a traceback.

A data file's bad line, too little text for the teacher, a workdir without a checkpoint, a
missing file or a NaN loss stops a command with a message that names the file, the line (or
step) and the fix; forty lines of traceback above it would bury it.
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


# What a command prints as one line: input to fix; files that are not there (or are, where a
# command would overwrite them), whose messages name the path; a training loss that became
# NaN (train.py names the step, the last good checkpoint and what to lower). Any other error
# is a bug, whose traceback is wanted.
USER_ERRORS = (InputError, FileNotFoundError, FileExistsError, FloatingPointError)


def clean_input_errors(main: Callable[..., _Result]) -> Callable[..., _Result]:
  """`main` (a CLI's body) that exits with status 1 and `Error: <message>` (and the notes
  added to the error on its way up, one per line) on one of `USER_ERRORS`."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs) -> _Result:
    try:
      return main(*args, **kwargs)
    except USER_ERRORS as error:
      sys.exit("\n".join([f"Error: {error}", *getattr(error, "__notes__", ())]))

  return wrapped
