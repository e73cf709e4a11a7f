"""LZW as Go's ``compress/lzw`` does it with ``LSB`` order and 8-bit literals (memberlist's choice).

Rules, which both directions follow bit for bit:

* Codes 0-255 are literals, 256 is *clear*, 257 is *end of stream*; new strings get codes from 258.
* Codes are packed least significant bit first, starting 9 bits wide. The width grows by one when
  the next code to assign reaches 512, 1024 and 2048; it never exceeds 12 bits.
* The writer sends a clear code first; when it would assign code 4095 it sends a clear code
  (12 bits wide) and starts over at 9 bits. It ends with the pending code, end of stream, and the
  remaining bits padded with zeros to a whole byte.
* The reader accepts any code up to the next one to assign (that one is the "KwKwK" case: the
  previous string plus its own first byte). At 12 bits with the table full it stops assigning
  codes until a clear code arrives. Bytes after the end-of-stream code are ignored.
"""

from __future__ import annotations

from ._errors import WireError

__all__ = ["lzw_compress", "lzw_decompress"]

_CLEAR = 256
_EOF = 257
_MAX_WIDTH = 12
_MAX_CODE = (1 << _MAX_WIDTH) - 1  # the writer starts over instead of assigning this code
_LITERALS = [bytes((i,)) for i in range(256)]


def lzw_decompress(data: bytes, *, max_output: int) -> bytes:
    """Decode a Go ``compress/lzw`` (LSB, litWidth 8) stream.

    Args:
        data: The compressed bytes, ending with the end-of-stream code.
        max_output: The most bytes the output may have; a longer output is refused before it is
            built, so a compression bomb costs no memory.

    Raises:
        WireError: On a code that is not yet defined, a stream that ends without the end-of-stream
            code, or an output longer than ``max_output``.
    """
    padded = bytes(data) + b"\x00\x00\x00"
    total_bits = len(data) * 8
    table: list[bytes] = _LITERALS + [b"", b""] + [b""] * (_MAX_CODE + 1 - 258)
    out = bytearray()
    out_len = 0
    width = 9
    mask = 0x1FF
    hi = _EOF  # the last code assigned; the next new string gets hi + 1
    overflow = 512
    prev = b""  # expansion of the previous code; empty when no code may be assigned
    bitpos = 0
    while True:
        if bitpos + width > total_bits:
            raise WireError(f"lzw: stream ends at byte {len(data)} without an end-of-stream code")
        p = bitpos >> 3
        code = ((padded[p] | padded[p + 1] << 8 | padded[p + 2] << 16) >> (bitpos & 7)) & mask
        bitpos += width
        if code < _CLEAR:
            entry = _LITERALS[code]
        elif code == _CLEAR:
            width, mask, hi, overflow, prev = 9, 0x1FF, _EOF, 512, b""
            continue
        elif code == _EOF:
            return bytes(out)
        elif code < hi or (code == hi and not prev):
            entry = table[code]
        elif code == hi:
            entry = prev + prev[:1]
        else:
            raise WireError(
                f"lzw: invalid code {code} at bit {bitpos - width} (next new code is {hi + 1})"
            )
        out_len += len(entry)
        if out_len > max_output:
            raise WireError(f"lzw: output exceeds the limit of {max_output} bytes")
        out += entry
        if prev:
            table[hi] = prev + entry[:1]
        prev = entry
        hi += 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                prev = b""
                hi -= 1
            else:
                width += 1
                mask = (mask << 1) | 1
                overflow <<= 1


def lzw_compress(data: bytes) -> bytes:
    """Encode ``data`` exactly as Go's ``lzw.NewWriter(w, lzw.LSB, 8)`` would, then ``Close``."""
    out = bytearray()
    bits = 0
    nbits = 0
    width = 9
    hi = _EOF
    overflow = 512
    table: dict[int, int] = {}

    def emit(code: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    def emit_and_advance(code: int) -> bool:
        """Emit ``code`` and take the next code number (wider codes past a power of two);
        whether the table was full, so that a clear code started it again."""
        nonlocal width, hi, overflow
        emit(code)
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            emit(_CLEAR)
            width, hi, overflow = 9, _EOF, 512
            table.clear()
            return True
        return False

    emit(_CLEAR)
    if data:
        code = data[0]
        for literal in data[1:]:
            key = (code << 8) | literal
            found = table.get(key)
            if found is not None:
                code = found
                continue
            full = emit_and_advance(code)
            code = literal
            if not full:
                table[key] = hi
        emit_and_advance(code)
    emit(_EOF)
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)
