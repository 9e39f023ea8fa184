"""A trace's attributes: their checksum, and strings stored where HDF5 checksums them.

``attrs_crc32`` (the attribute ``ATTRS_CRC``) is a CRC32 of the other attributes in a canonical JSON form,
verified when a trace is opened. Text attributes are written fixed-length (:func:`fixed_text`): a
variable-length string lives in HDF5's global heap, which no HDF5 file format checksums and whose
corruption can hang HDF5 (a zero-length heap object makes its parser loop forever); a fixed-length one lives
in the attribute's message, in an object header that the 1.10 format checksums. :func:`plain` reads both
kinds (and the variable-length strings of older traces) back as ``str``.
"""

from __future__ import annotations

import json
import zlib

import h5py
import numpy as np

ATTRS_CRC = "attrs_crc32"  # CRC32 of the other attributes (datasets carry fletcher32 chunk checksums)


def plain(v):
    """An attribute's value as a Python scalar, a string whether stored fixed-length (bytes) or variable."""
    v = v.item() if hasattr(v, "item") else v
    return v.decode() if isinstance(v, bytes) else v


def fixed_text(s: str) -> np.ndarray:
    """``s`` as a fixed-length UTF-8 string attribute: kept in the object header (checksummed), not in the
    global heap, which no HDF5 format checksums (and whose corruption can hang HDF5)."""
    b = s.encode()
    return np.array(b, dtype=h5py.string_dtype("utf-8", max(1, len(b))))


def attrs_crc32(attrs) -> int:
    """CRC32 of a trace's attributes other than ``attrs_crc32`` itself, in a canonical JSON form."""
    body = {k: plain(attrs[k]) for k in sorted(attrs) if k != ATTRS_CRC}
    return zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode())
