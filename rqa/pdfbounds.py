"""Bounds on what a PDF may make the PDF library decode, checked before it decodes anything.

A 306 KB PDF can hold a 300 MB content stream (a decompression bomb): pdfium would inflate it, and
its memory grows many times the stream's size as it parses the operators. So each page's content
streams and the form XObjects it draws are measured first, with pypdf, decoding Flate, LZW and
RunLength in bounded steps that only count (no step holds more than the bound), and the file is
refused past MAX_PAGE_CONTENT a page or MAX_PDF_CONTENT a file. The largest page of the 28 shared
papers decodes to 7.2 MB and the largest file to 10.0 MB; a page of 15 MB of dense drawing operators
raised pdfium's RSS by about 410 MB, hence 16 MB. pypdf has no decoder that stops at a bound, so
the LZW and RunLength ones are written here; images count their raw length (they are not inflated
for text extraction).
"""

from __future__ import annotations

import logging
from pathlib import Path


class PdfRefused(Exception):
    """The PDF's content is over a bound, or cannot be checked; the message says which, in one line."""


MAX_PAGE_CONTENT = 16 << 20   # decoded bytes of one page's content streams and form XObjects
MAX_PDF_CONTENT = 128 << 20   # ... summed over the pages of one file
_INFLATE_STEP = 4 << 20       # zlib output per step while only counting


class _TooBig(Exception):
    pass


def check_pdf_content(path: Path) -> None:
    """Raise PdfRefused if a page's content decodes to more than MAX_PAGE_CONTENT bytes, or the
    file's pages to more than MAX_PDF_CONTENT together. Checked with pypdf before pdfium decodes."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, LimitReachedError

    mb = MAX_PAGE_CONTENT >> 20
    bomb = f"a page's content decompresses to more than {mb} MB (a decompression bomb?)"
    log = logging.getLogger("pypdf")
    level = log.level
    log.setLevel(logging.ERROR)  # pypdf warns about every repaired xref entry
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            reader.decrypt("")  # pdfium opened it, so the user password is empty
        sizes: dict = {}  # stream id -> decoded size, so a form shared by many pages is decoded once
        total = 0
        for page in reader.pages:
            size = 0
            for key, stream in _page_streams(page):
                if key not in sizes:
                    sizes[key] = _decoded_size(stream, MAX_PAGE_CONTENT)
                size += sizes[key]
                if size > MAX_PAGE_CONTENT:
                    raise _TooBig(bomb)
            total += size
            if total > MAX_PDF_CONTENT:
                raise _TooBig(f"the pages' content decompresses to more than {MAX_PDF_CONTENT >> 20} MB "
                              "(a decompression bomb?)")
    except _TooBig as e:
        raise PdfRefused(str(e)) from None
    except LimitReachedError:  # pypdf's own bound, e.g. on an object stream
        raise PdfRefused(bomb) from None
    except DependencyError:
        raise PdfRefused("encrypted PDF whose content cannot be checked (AES needs the cryptography "
                          "package)") from None
    except PdfRefused:
        raise
    except Exception as e:  # a file pypdf cannot walk is not one we can vouch for
        reason = " ".join(str(e).split())[:200]
        raise PdfRefused(f"corrupt or unreadable PDF (pypdf: {type(e).__name__}: {reason})") from None
    finally:
        log.setLevel(level)


def _page_streams(page):
    """(id, stream) of the page's content streams and of the form XObjects it can draw, nested."""
    from pypdf.generic import ArrayObject, IndirectObject, StreamObject

    def key(ref, obj):
        return (ref.idnum, ref.generation) if isinstance(ref, IndirectObject) else id(obj)

    contents = page.get("/Contents")
    parts = contents.get_object() if contents is not None else None
    refs = list(parts) if isinstance(parts, ArrayObject) else [contents] if parts is not None else []
    for ref in refs:
        obj = ref.get_object()
        if isinstance(obj, StreamObject):
            yield key(ref, obj), obj
    seen = set()
    todo = [page.get("/Resources")]
    while todo:
        res = todo.pop()
        res = res.get_object() if res is not None else None
        xobjects = res.get("/XObject") if hasattr(res, "get") else None
        xobjects = xobjects.get_object() if xobjects is not None else None
        if not hasattr(xobjects, "values"):
            continue
        for ref in xobjects.values():
            obj = ref.get_object()
            k = key(ref, obj)
            if k in seen or not isinstance(obj, StreamObject) or obj.get("/Subtype") != "/Form":
                continue
            seen.add(k)
            yield k, obj
            todo.append(obj.get("/Resources"))


def _decoded_size(stream, limit: int) -> int:
    """The stream's decoded length, or limit + 1 once it is over the limit. Flate, LZW and RunLength
    are decoded in bounded steps; ASCIIHex and ASCII85 only shrink; a stream without filters, or with
    one pdfium does not decode for content (an image codec), counts its raw length."""
    from pypdf.generic import ArrayObject

    filters = stream.get("/Filter")
    filters = filters.get_object() if filters is not None else None
    names = [str(f.get_object()) for f in filters] if isinstance(filters, ArrayObject) \
        else [str(filters)] if filters is not None else []
    parms = stream.get("/DecodeParms")
    parms = parms.get_object() if parms is not None else None
    parms = list(parms) if isinstance(parms, ArrayObject) else [parms] * len(names)
    data = stream._data  # the encoded bytes as stored in the file (decrypted)
    for i, name in enumerate(names):
        last = i == len(names) - 1
        if name in ("/FlateDecode", "/Fl"):
            out = _inflate(data, limit, keep=not last)
        elif name in ("/LZWDecode", "/LZW"):
            parm = parms[i].get_object() if i < len(parms) and parms[i] is not None else {}
            out = _lzw_decode(data, limit, int(parm.get("/EarlyChange", 1)))
        elif name in ("/RunLengthDecode", "/RL"):
            out = _run_length_decode(data, limit)
        elif name in ("/ASCIIHexDecode", "/AHx"):
            out = _ascii_hex_decode(data)
        elif name in ("/ASCII85Decode", "/A85"):
            out = _ascii85_decode(data)
        else:
            break
        if isinstance(out, int):
            return min(out, limit + 1)
        data = out
        if len(data) > limit:
            return limit + 1
    return min(len(data), limit + 1)


def _inflate(data: bytes, limit: int, keep: bool) -> bytes | int:
    """zlib-decode at most limit + 1 bytes; the bytes if `keep`, else only their count. A damaged
    tail ends the count where pdfium would stop decoding too."""
    import zlib

    d = zlib.decompressobj()
    out: list[bytes] = []
    n = 0
    pending = data
    try:
        while pending and n <= limit and not d.eof:
            step = min(limit + 1 - n, _INFLATE_STEP) if not keep else limit + 1 - n
            chunk = d.decompress(pending, step)
            pending = d.unconsumed_tail
            n += len(chunk)
            if keep:
                out.append(chunk)
            if not chunk and not pending:
                break
    except zlib.error:
        pass
    return b"".join(out) if keep else n


def _lzw_decode(data: bytes, limit: int, early: int = 1) -> bytes:
    """LZW (PDF flavour: 9-12 bit codes, 256 clear, 257 end), at most limit + 1 bytes out."""
    out = bytearray()
    table: list[bytes] = []
    prev = b""
    width, bits, acc = 9, 0, 0

    def reset():
        table[:] = [bytes((i,)) for i in range(256)] + [b"", b""]

    reset()
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= width:
            bits -= width
            code = (acc >> bits) & ((1 << width) - 1)
            acc &= (1 << bits) - 1
            if code == 256:
                reset()
                prev, width = b"", 9
                continue
            if code == 257:
                return bytes(out)
            if code < len(table):
                entry = table[code]
            elif code == len(table) and prev:
                entry = prev + prev[:1]
            else:
                return bytes(out)  # a bad code: pdfium stops there too
            out += entry
            if len(out) > limit:
                return bytes(out[: limit + 1])
            if prev and len(table) < 4096:
                table.append(prev + entry[:1])
            prev = entry
            if len(table) + early >= (1 << width) and width < 12:
                width += 1
    return bytes(out)


def _run_length_decode(data: bytes, limit: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data) and len(out) <= limit:
        n = data[i]
        if n == 128:
            break
        if n < 128:
            out += data[i + 1: i + 2 + n]
            i += n + 2
        else:
            out += data[i + 1: i + 2] * (257 - n)
            i += 2
    return bytes(out[: limit + 1])


def _ascii_hex_decode(data: bytes) -> bytes:
    import binascii

    hexes = bytes(data).split(b">", 1)[0].translate(None, b" \t\r\n\f\0")
    if len(hexes) % 2:
        hexes += b"0"
    try:
        return binascii.unhexlify(hexes)
    except binascii.Error:
        return b""


def _ascii85_decode(data: bytes) -> bytes:
    import base64

    body = bytes(data).split(b"~>", 1)[0].translate(None, b" \t\r\n\f\0")
    if body.startswith(b"<~"):
        body = body[2:]
    try:
        return base64.a85decode(body)
    except ValueError:
        return b""
