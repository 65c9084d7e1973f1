"""External-data files an ONNX model refers to, read from the protobuf wire format (stdlib only).

ONNX tensors can keep their bytes in files beside ``model.onnx`` (``data_location = EXTERNAL``,
``external_data {key: "location"}``). A model that names ``../../secret`` or ``/etc/passwd`` would
make the runtime read outside the model's directory; only recent ONNX Runtime versions refuse
that, so dlforge checks it itself before any session opens, without importing ``onnx``: the
walker below reads just the fields on the path to a tensor and skips everything else by length.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.errors import InputError

# Field numbers from onnx.proto3 (stable since IR version 3).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf):
    """``(field_number, value)`` for the length-delimited fields of one message; others are skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            yield number, buf[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _tensor_locations(tensor) -> list[str]:
    out = []
    for number, entry in _fields(tensor):
        if number == _TENSOR_EXTERNAL_DATA:
            pairs = dict(_fields(entry))
            if bytes(pairs.get(_ENTRY_KEY, b"")) == b"location":
                out.append(bytes(pairs.get(_ENTRY_VALUE, b"")).decode("utf-8", "replace"))
    return out


def _sparse_locations(sparse) -> list[str]:
    return [loc for n, t in _fields(sparse) if n in (_SPARSE_VALUES, _SPARSE_INDICES) for loc in _tensor_locations(t)]


def _node_locations(node) -> list[str]:
    out = []
    for number, attr in _fields(node):
        if number != _NODE_ATTRIBUTE:
            continue
        for field, value in _fields(attr):
            if field in (_ATTR_T, _ATTR_TENSORS):
                out += _tensor_locations(value)
            elif field in (_ATTR_G, _ATTR_GRAPHS):
                out += _graph_locations(value)
            elif field in (_ATTR_SPARSE, _ATTR_SPARSES):
                out += _sparse_locations(value)
    return out


def _graph_locations(graph) -> list[str]:
    out = []
    for number, value in _fields(graph):
        if number == _GRAPH_INITIALIZER:
            out += _tensor_locations(value)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            out += _sparse_locations(value)
        elif number == _GRAPH_NODE:
            out += _node_locations(value)
    return out


def external_data_locations(path: str | os.PathLike) -> list[str]:
    """Every external-data location a model file names, in order, without duplicates."""
    path = Path(path)
    buf = memoryview(path.read_bytes())  # slices of a memoryview share the bytes: no copies below
    found = []
    try:
        for number, value in _fields(buf):
            if number == _MODEL_GRAPH:
                found += _graph_locations(value)
            elif number == _MODEL_FUNCTIONS:
                found += [loc for n, node in _fields(value) if n == _FUNCTION_NODE for loc in _node_locations(node)]
    except (ValueError, IndexError) as exc:
        raise InputError(f"{path} is not a readable ONNX model ({exc}); re-export it") from exc
    return list(dict.fromkeys(found))


def check_external_data(path: str | os.PathLike) -> list[Path]:
    """The external-data files of the model at ``path``, each refused unless it is a regular file
    (not a link) inside the model's directory."""
    path = Path(path)
    root = path.parent.resolve()
    files = []
    for location in external_data_locations(path):
        target = path.parent / location
        resolved = target.resolve()
        if os.path.isabs(location) or (root not in resolved.parents):
            raise InputError(f"refusing {path}: its external data {location!r} points outside the model's directory "
                             f"({root}); keep external-data files beside the model")
        if target.is_symlink() or not target.is_file():
            raise InputError(f"refusing {path}: its external data {location!r} is missing or not a regular file")
        files.append(target)
    return files
