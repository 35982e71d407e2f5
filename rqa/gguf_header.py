"""A GGUF file's header: its scalar metadata and its tensors' shapes and types, without its vocabulary.

gguf's GGUFReader builds an object for every element of every array, and a model's tokenizer is
two arrays of 50,000 to 150,000 strings: reading a model's header took it 10 to 12 s here, at
every model start and adapter check. rqa needs the scalars (turn format, architecture, file type)
and the tensor shapes, so this reads the header as the GGUF specification lays it out and steps
over arrays (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md). It refuses what llama.cpp
refuses (another version, arrays of arrays, more than 4 dimensions, a repeated name), so that a
hostile file costs no more than its size to reject.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

# value types of the specification: struct format of each scalar; 8 is a string, 9 an array
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
VERSIONS = (2, 3)  # version 1 counted in 32 bits; gguf and llama.cpp read 2 and 3
MAX_DIMS = 4  # GGML_MAX_DIMS


@dataclass
class GGUFHeader:
    fields: dict[str, object]  # key -> scalar or string; arrays are stepped over, not kept
    tensors: dict[str, tuple[int, ...]]  # name -> shape as stored (ne0 first)
    types: dict[str, int]  # name -> ggml type id (gguf.GGMLQuantizationType: 0 F32, 2 Q4_0, 8 Q8_0, ...)


def read_header(path: Path) -> GGUFHeader:
    """The header of a GGUF file. A file that is not GGUF, or not one llama.cpp reads, or ends
    inside its header, raises ValueError with a short reason."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError("not a GGUF file (bad magic bytes)")
        if len(data) < 8:
            raise ValueError("the file ends inside its header")
        # a file written on a big-endian machine has its version's low bytes zero as read here
        order = ">" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF == 0 else "<"
        reader = _Reader(data, order, 4)
        if (version := reader.scalar("I")) not in VERSIONS:
            raise ValueError(f"GGUF version {version} (rqa reads {' and '.join(map(str, VERSIONS))})")
        n_tensors, n_fields = reader.scalar("Q"), reader.scalar("Q")
        fields, keys = {}, set()
        for _ in range(n_fields):
            key, kind = reader.string(), reader.scalar("I")
            value = reader.value(kind)
            if key in keys:
                raise ValueError(f"the key {key} is written twice")
            keys.add(key)
            if kind != ARRAY:
                fields[key] = value
        tensors, types = {}, {}
        for _ in range(n_tensors):
            name = reader.string()
            if (n_dims := reader.scalar("I")) > MAX_DIMS:
                raise ValueError(f"the tensor {name} has {n_dims} dimensions (at most {MAX_DIMS})")
            if name in tensors:
                raise ValueError(f"the tensor {name} is written twice")
            tensors[name] = tuple(reader.scalar("Q") for _ in range(n_dims))
            types[name] = reader.scalar("I")
            reader.scalar("Q")  # the tensor's data offset
        return GGUFHeader(fields, tensors, types)


class _Reader:
    def __init__(self, data: mmap.mmap, order: str, offset: int):
        self.data, self.order, self.offset = data, order, offset

    def scalar(self, fmt: str):
        try:
            (value,) = struct.unpack_from(self.order + fmt, self.data, self.offset)
        except struct.error:
            raise ValueError("the file ends inside its header") from None
        self.offset += struct.calcsize(fmt)
        return value

    def skip(self, size: int) -> None:
        if size > len(self.data) - self.offset:
            raise ValueError("the file ends inside its header")
        self.offset += size

    def string(self) -> str:
        start = self.offset + 8
        self.skip(self.scalar("Q"))
        return self.data[start:self.offset].decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind == STRING:
            return self.string()
        if kind in SCALARS:
            return self.scalar(SCALARS[kind])
        if kind != ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        item, count = self.scalar("I"), self.scalar("Q")
        if item in SCALARS:  # a block of fixed-size values: stepped over at once
            self.skip(count * struct.calcsize(SCALARS[item]))
        elif item == STRING:  # each string says its own length
            for _ in range(count):
                self.skip(self.scalar("Q"))
        else:  # llama.cpp refuses arrays of arrays too
            raise ValueError(f"an array of GGUF value type {item}")
        return None
