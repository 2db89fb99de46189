"""How values read from a request or a stage's outputs look inside a condition.

Stage outputs are tensors, but conditions are written against plain values
(``langid.language != 'en'``), so every value read from the context is normalised once:

- ``bytes`` become ``str`` (UTF-8; undecodable bytes become U+FFFD instead of failing the request);
- a numpy array with exactly one element becomes that element (a ``BYTES [1]`` tensor reads as a
  ``str``, an ``FP32 [1]`` tensor as a ``float``);
- any other numpy array becomes a (nested) list of normalised elements, so ``len(x)``,
  ``'de' in x`` and ``x[0]`` work;
- numpy scalars become the matching Python ``int``/``float``/``bool``;
- everything else (``str``, numbers, ``None``, mappings) is left as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["normalize"]


def normalize(value: Any) -> Any:
    """The plain Python value a condition sees for ``value`` (see the module docstring)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return normalize(value.reshape(-1)[0])
        return [normalize(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
