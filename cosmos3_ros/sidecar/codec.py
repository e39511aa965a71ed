# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""openpi's msgpack-numpy wire encoding, with every array header checked. Pure (numpy + msgpack).

Encoding (wire-compatible with ``openpi_client.msgpack_numpy``): a numpy array travels as a msgpack map
``{b"__ndarray__": True, b"data": <bytes>, b"dtype": "<f4", b"shape": [..]}``, a numpy scalar as
``{b"__npgeneric__": True, b"data": <value>, b"dtype": "<f4"}``. Unlike openpi's decoder, ours never trusts the
header: only plain bool/int/uint/float/unicode dtypes are accepted (no object, void, structured or sub-array dtypes,
so nothing can reach pickle), the shape must be a short list of non-negative ints, and the byte count must match the
shape exactly (a header claiming a giant shape is rejected before any allocation).
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgpack
import numpy as np

#: Most dimensions an array on the wire may have.
MAX_ARRAY_NDIM = 8


class ProtocolError(ValueError):
    """A message or request does not follow the protocol; the text says what to fix."""


# -- msgpack-numpy ---------------------------------------------------------------------------

#: dtype strings accepted on the wire: bool, signed/unsigned ints, floats of 1 to 8 bytes, and
#: fixed-width unicode (openpi clients may send the prompt as ``np.str_``).
_DTYPE_RE = re.compile(r"^[<>|=]?(?:b1|[iu][1248]|f[248]|U[1-9][0-9]{0,4})$")


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or not _DTYPE_RE.match(value):
        raise ProtocolError(
            f"array dtype {short_repr(value)} is not accepted; send bool, int, uint or float arrays (e.g. '|u1', '<f4')"
        )
    return np.dtype(value)


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (for error messages about untrusted input)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _encode(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy arrays and scalars in openpi's layout."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufU" or obj.dtype.fields is not None:
            raise TypeError(f"cannot send an array of dtype {obj.dtype}")
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biufU":
            raise TypeError(f"cannot send a scalar of dtype {obj.dtype}")
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send an object of type {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    """msgpack ``object_hook``: rebuild arrays and scalars after checking every header field."""
    if b"__ndarray__" in obj:
        data, shape = obj.get(b"data"), obj.get(b"shape")
        dtype = _dtype(obj.get(b"dtype"))
        if not isinstance(data, bytes):
            raise ProtocolError("array 'data' must be binary")
        if not isinstance(shape, (list, tuple)) or len(shape) > MAX_ARRAY_NDIM:
            raise ProtocolError(
                f"array 'shape' must be a list of at most {MAX_ARRAY_NDIM} ints, got {short_repr(shape)}"
            )
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape):
            raise ProtocolError(f"array 'shape' must hold ints in [0, 2**31), got {short_repr(shape)}")
        expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for giant claims
        if expected != len(data):
            raise ProtocolError(
                f"array of shape {short_repr(shape)} and dtype {dtype.str} needs {expected} bytes, "
                f"message has {len(data)}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        value = obj.get(b"data")
        if isinstance(value, (bytes, list, dict, tuple)) or value is None:
            raise ProtocolError(f"numpy scalar data must be a number or string, got {type(value).__name__}")
        try:
            return dtype.type(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"numpy scalar {short_repr(value)} does not fit dtype {dtype.str}: {exc}") from None
    return obj


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (dicts, lists, str, numbers, None, numpy arrays and scalars) as openpi does."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Decode one message; raise ProtocolError (never anything else) for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected a binary msgpack message, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except ProtocolError:
        raise
    except msgpack.StackError:
        raise ProtocolError("message nests too deeply") from None
    except msgpack.ExtraData:
        raise ProtocolError("message has trailing bytes after one msgpack object") from None
    except Exception as exc:  # msgpack raises ValueError, FormatError, UnicodeDecodeError, TypeError, ...
        detail = short_repr(str(exc), 160)
        raise ProtocolError(f"not a valid msgpack message ({type(exc).__name__}: {detail})") from None
