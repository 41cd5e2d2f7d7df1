"""Reading a ``.pdparams`` state_dict without running code from it.

``paddle.load`` is ``pickle.load``: a crafted file runs whatever it names. What
``paddle.save(layer.state_dict(), FILE)`` writes needs only dicts, lists, tuples, strings,
numbers and numpy arrays (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype``), so ``load_state_dict`` unpickles with a ``find_class`` that allows those
and refuses every other global (exit 2, code ``unsafe-deserialization``). The result is
then unpacked as ``paddle.load`` would: tensors split by protocol 2/3 joined again, the
``(name, array)`` pairs of Paddle 2.1 reduced to their arrays. Needs no Paddle.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.errors import UsageError, first_line

UNSAFE = "unsafe-deserialization"
TRUST_HINT = ("pass --trust-code only if you trust this file (paddle.load then runs what it "
              "holds), or save a plain state_dict: paddle.save(layer.state_dict(), "
              "'FILE.pdparams')")
_SAVE_HINT = "pass a state_dict saved with paddle.save(layer.state_dict(), 'FILE.pdparams')"
# The globals a state_dict of numpy arrays needs (numpy 1 and numpy 2 spellings).
_ALLOWED = frozenset({
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})
_NAME_TABLE = "StructuredToParameterName@@"  # parameter names older Paddle saved alongside
_SPLIT_TABLE = "UnpackBigParamInfor@@"  # tensors paddle.save split under protocol 2 or 3


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the state_dict in ``path``, by parameter name; a UsageError (exit 2)
    for a file that names anything else to unpickle, or is not a state_dict."""
    try:
        with path.open("rb") as handle:
            state = _StateDictUnpickler(handle, encoding="latin1").load()
    except _Refused as exc:
        raise UsageError(
            f"--weights {path.name} is a pickle that calls {exc.name}, not a state_dict of "
            "arrays: paddle.load would run it",
            hint=TRUST_HINT, code=UNSAFE) from exc
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, MemoryError, RecursionError, OverflowError) as exc:
        raise UsageError(f"cannot load --weights {path}: {first_line(exc, limit=240)}",
                         hint=_SAVE_HINT, code="bad-weights") from exc
    if not isinstance(state, dict):
        raise UsageError(f"--weights {path} holds a {type(state).__name__}, not a state_dict",
                         hint=_SAVE_HINT, code="bad-weights")
    state = {key: value for key, value in state.items() if key != _NAME_TABLE}
    _join_split_tensors(path, state)
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], np.ndarray)):
            value = value[1]  # Paddle 2.1 saved a tensor as (name, array)
        if not (isinstance(key, str) and isinstance(value, np.ndarray)
                and value.dtype != object):
            raise UsageError(
                f"--weights {path}: entry {str(key)[:80]!r} is a {type(value).__name__}, "
                "not an array", hint=_SAVE_HINT, code="bad-weights")
        arrays[key] = value
    return arrays


def _join_split_tensors(path: Path, state: dict) -> None:
    """What paddle.load does with tensors paddle.save split into 1 GB slices."""
    table = state.pop(_SPLIT_TABLE, None)
    if table is None:
        return
    try:
        for key, info in table.items():
            slices = [state.pop(part) for part in info["slices"]]
            state[key] = np.concatenate(slices).reshape(info["OriginShape"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--weights {path}: its table of split tensors is broken: "
                         f"{first_line(exc, limit=160)}", hint=_SAVE_HINT,
                         code="bad-weights") from exc
