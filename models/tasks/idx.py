"""Reader and writer for the IDX format of MNIST and Fashion-MNIST (LeCun et al. 1998).

Layout: two zero bytes, one type byte, one byte with the number of dimensions
n, then n big-endian uint32 sizes, then the data in big-endian C order.
Files may be gzipped (detected from the gzip magic bytes, not the name).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

# IDX type byte -> numpy dtype (big-endian where it matters)
_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (plain or gzipped), in native byte order.
    Every way the file can be wrong raises ValueError naming the file and what
    was expected: a half-downloaded archive must say which file to fetch again."""
    path = Path(path)
    raw = path.read_bytes()
    gzipped = raw[:2] == _GZIP_MAGIC
    if gzipped:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path}: gzip data is truncated or corrupt ({e}); expected a complete "
                             f"gzipped IDX file: download it again") from None
    where = f"{path}{' (after gunzip)' if gzipped else ''}"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        hint = ("; the name ends in .gz but the file is not gzip-compressed (no 1f 8b magic)"
                if path.suffix == ".gz" and not gzipped else "")
        raise ValueError(f"{where}: not an IDX file: starts with {raw[:4]!r}, expected the IDX "
                         f"magic number 00 00 <type> <ndim>{hint}")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise ValueError(f"{where}: unknown IDX type byte 0x{code:02x}; expected one of "
                         f"{', '.join(f'0x{c:02x}' for c in _DTYPES)}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{where}: truncated header: {len(raw)} bytes, expected {header} "
                         f"(4 + 4 x {ndim} dimension sizes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        kind = "truncated" if len(raw) - header < expected else "trailing bytes"
        raise ValueError(f"{where}: {kind}: header says shape {shape} ({expected} bytes of data), "
                         f"file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write `array` as IDX; gzipped when `compress` (default: the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of "
                         f"{sorted(str(d) for d in _DTYPES.values())}")
    code = _CODES[key]
    body = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    body += np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body)
    path.write_bytes(body)
    return path
