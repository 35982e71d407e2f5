"""A GGUF file's header: its scalar metadata and its tensors' shapes, without its vocabulary.

gguf's GGUFReader builds an object for every element of every array, and a model's tokenizer is
two arrays of 50,000 to 150,000 strings: reading a model's header took it 10 to 12 s here, at
every model start and adapter check. rqa needs the scalars (turn format, architecture, file type)
and the tensor shapes, so this reads the header as the GGUF specification lays it out and steps
over arrays (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

# value types of the specification: struct format of each scalar; 8 is a string, 9 an array
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


@dataclass
class GGUFHeader:
    fields: dict[str, object]  # key -> scalar or string; arrays are stepped over, not kept
    tensors: dict[str, tuple[int, ...]]  # name -> shape as stored (ne0 first)


def read_header(path: Path) -> GGUFHeader:
    """The header of a GGUF file. A file that is not GGUF, or ends inside its header, raises
    ValueError."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError("not a GGUF file (bad magic bytes)")
        # a file written on a big-endian machine has its version's low bytes zero as read here
        order = ">" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF == 0 else "<"
        reader = _Reader(data, order, 8)
        n_tensors, n_fields = reader.scalar("Q"), reader.scalar("Q")
        fields = {}
        for _ in range(n_fields):
            key, kind = reader.string(), reader.scalar("I")
            value = reader.value(kind)
            if kind != ARRAY:
                fields[key] = value
        tensors = {}
        for _ in range(n_tensors):
            name = reader.string()
            n_dims = reader.scalar("I")
            tensors[name] = tuple(reader.scalar("Q") for _ in range(n_dims))
            reader.scalar("I"), reader.scalar("Q")  # the tensor's type and its data offset
        return GGUFHeader(fields, tensors)


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

    def string(self) -> str:
        size = self.scalar("Q")
        if self.offset + size > len(self.data):
            raise ValueError("the file ends inside its header")
        text = self.data[self.offset:self.offset + size].decode("utf-8", errors="replace")
        self.offset += size
        return text

    def value(self, kind: int):
        if kind == STRING:
            return self.string()
        if kind in SCALARS:
            return self.scalar(SCALARS[kind])
        if kind != ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        item, count = self.scalar("I"), self.scalar("Q")
        if item in SCALARS:  # a block of fixed-size values: step over it at once
            self.offset += count * struct.calcsize(SCALARS[item])
            if self.offset > len(self.data):
                raise ValueError("the file ends inside its header")
        elif item == STRING:  # each string says its own length
            for _ in range(count):
                size = self.scalar("Q")  # moves past the length itself
                self.offset += size
            if self.offset > len(self.data):
                raise ValueError("the file ends inside its header")
        else:
            for _ in range(count):
                self.value(item)
        return None
