"""Shared helpers: the reference vectors (copied from the oracle), read and written with a
small safetensors codec so that the tests need nothing beyond NumPy."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"

_DTYPES = {"F64": "<f8", "F32": "<f4", "I64": "<i8"}


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = raw[8 + size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write_safetensors(tensors):
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


@pytest.fixture(scope="session")
def manifest():
    return json.loads((DATA / "manifest.json").read_text())


def logdet_rate(z, eps_sq):
    """R(Z) = ½ logdet(I + d/(nε²) ZᵀZ) in NumPy (rows are samples)."""
    n, d = z.shape
    sign, value = np.linalg.slogdet(np.eye(d) + d / (n * eps_sq) * z.T @ z)
    assert sign > 0
    return 0.5 * value


def class_rate(z, pi, eps_sq):
    """Rc(Z | Π) in NumPy with Π as n × k."""
    n, d = z.shape
    total = 0.0
    for j in range(pi.shape[1]):
        t = pi[:, j].sum()
        if t == 0:
            continue
        g = z.T @ (pi[:, j : j + 1] * z)
        total += t / (2 * n) * np.linalg.slogdet(np.eye(d) + d / (t * eps_sq) * g)[1]
    return total


def one_hot(labels, k):
    pi = np.zeros((len(labels), k))
    pi[np.arange(len(labels)), labels] = 1.0
    return pi
