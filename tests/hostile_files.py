"""Files that lie about themselves, for the tests of untrusted input."""

import io
import struct
import zlib

from PIL import Image


def png_declaring(width, height):
    """A 69-byte PNG whose header claims `width` x `height` pixels (no such pixel data follows)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the chunk's CRC over its type and data
    return bytes(data)
