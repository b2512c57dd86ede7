"""`LineStatus` values as int8 constants, the type the kernels write into status arrays.

numba freezes module globals into the kernels at compile time, so every kernel module imports
these instead of building its own copies.
"""

from __future__ import annotations

import numpy as np

from engine.codes import LineStatus

OK = np.int8(LineStatus.OK)
INSUFFICIENT = np.int8(LineStatus.INSUFFICIENT)
UNKNOWN_SKU = np.int8(LineStatus.UNKNOWN_SKU)
UNKNOWN_NODE = np.int8(LineStatus.UNKNOWN_NODE)
STALE = np.int8(LineStatus.STALE)
UNKNOWN_GROUP = np.int8(LineStatus.UNKNOWN_GROUP)
NODE_DISABLED = np.int8(LineStatus.NODE_DISABLED)
INVALID_QTY = np.int8(LineStatus.INVALID_QTY)
NEGATIVE_STOCK = np.int8(LineStatus.NEGATIVE_STOCK)
PARTIAL = np.int8(LineStatus.PARTIAL)
