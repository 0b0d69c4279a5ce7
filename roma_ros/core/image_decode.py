"""Camera images -> RGB uint8 frames of the ROMA size (no rclpy).

Input types mirror sensor_msgs/Image and sensor_msgs/CompressedImage field for field, so a node
builds them from a message without copying pixel data (`data` may be any bytes-like object, e.g.
the message's own array).

Semantics follow cv_bridge's `imgmsg_to_cv2(msg, "rgb8")` / `compressed_imgmsg_to_cv2(msg,
"rgb8")`: colour conversions are OpenCV's (Bayer: ROS `bayer_rggb8` is OpenCV's `BayerBG`, as in
cv_bridge; YUV 4:2:2: `yuv422`/`uyvy` is UYVY and `yuv422_yuy2`/`yuyv` is YUYV), 16-bit data is
scaled to 8 bits by 255/65535 with rounding (cv_bridge's `convertTo`), alpha is dropped, `step`
row padding and `is_bigendian` are honoured. cv_bridge itself is not used: for these conversions
it calls the same OpenCV functions after a copy, so it cannot be faster.

`decode_frame(image, max_pixels)` == `resize_to_roma(to_rgb(image), max_pixels)`, exactly, for
raw images; for 8-bit RGB/BGR/RGBA/BGRA/mono it resizes before converting colour (the same
result, as area resizing treats channels independently, at a fraction of the cost). JPEGs are
decoded at 1/2, 1/4 or 1/8 scale by libjpeg when the ROMA size allows (not bit-identical to a
full decode + resize, visually the same, 3-6x faster).

Size bound: no image over MAX_SOURCE_PIXELS (4096 x 4096) is decoded (errors.image_too_large).
A compressed image's size is read from its header first (PNG IHDR, JPEG SOFn): a 389 KB PNG of
20000 x 20000 would otherwise make libpng allocate 1.2 GB (2.4 GB RSS with the colour
conversion), and progressive JPEGs hold full-size coefficient buffers even when decoded at
1/8. Only JPEG and PNG are decoded, because only their headers are read here; a raw image is
checked after its data length, which already proves the bytes exist.
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np

from roma_ros.core.errors import DecodeError
from roma_ros.core.log_text import loggable
from roma_ros.core.profile import FrameSizing
from roma_ros.core.resize import ROMA_MAX_PIXELS, release_resize, roma_frame_size

MAX_SOURCE_PIXELS = 4096 * 4096  # 16.8 Mpx: above any robot camera we know ROMA to be fed by

BytesLike = Union[bytes, bytearray, memoryview, np.ndarray, array.array]  # any buffer


@dataclass(frozen=True)
class RawImage:
    """The fields of a sensor_msgs/Image that decoding needs."""

    height: int
    width: int
    encoding: str
    step: int
    data: BytesLike
    is_bigendian: bool = False


@dataclass(frozen=True)
class CompressedImage:
    """The fields of a sensor_msgs/CompressedImage that decoding needs."""

    format: str
    data: BytesLike


@dataclass(frozen=True)
class _Encoding:
    """How one `encoding` string is laid out and turned into RGB."""

    channels: int  # values per pixel as stored (2 for packed YUV 4:2:2)
    depth: int  # bits per value: 8 or 16
    cv_code: int | None  # cv2.cvtColor code to RGB, None when already RGB
    rows_factor: float = 1.0  # stored rows per image row (1.5 for NV21)
    resize_first: bool = False  # 8-bit per-pixel conversion: resizing first gives the same result
    demosaic: bool = False  # Bayer: the conversion interpolates, so 16 -> 8 bits must come after


_E = _Encoding
ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _E(3, 8, None, resize_first=True),
    "8UC3": _E(3, 8, None, resize_first=True),  # cv_bridge passes 8UC3 through as is
    "bgr8": _E(3, 8, cv2.COLOR_BGR2RGB, resize_first=True),
    "rgba8": _E(4, 8, cv2.COLOR_RGBA2RGB, resize_first=True),
    "bgra8": _E(4, 8, cv2.COLOR_BGRA2RGB, resize_first=True),
    "mono8": _E(1, 8, cv2.COLOR_GRAY2RGB, resize_first=True),
    "rgb16": _E(3, 16, None),
    "bgr16": _E(3, 16, cv2.COLOR_BGR2RGB),
    "rgba16": _E(4, 16, cv2.COLOR_RGBA2RGB),
    "bgra16": _E(4, 16, cv2.COLOR_BGRA2RGB),
    "mono16": _E(1, 16, cv2.COLOR_GRAY2RGB),
    "yuv422": _E(2, 8, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": _E(2, 8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _E(2, 8, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": _E(2, 8, cv2.COLOR_YUV2RGB_YUY2),
    "nv21": _E(1, 8, cv2.COLOR_YUV2RGB_NV21, rows_factor=1.5),
    # OpenCV names a Bayer pattern by its second row's first two pixels (cv_bridge's mapping).
    "bayer_rggb8": _E(1, 8, cv2.COLOR_BayerBG2RGB, demosaic=True),
    "bayer_bggr8": _E(1, 8, cv2.COLOR_BayerRG2RGB, demosaic=True),
    "bayer_gbrg8": _E(1, 8, cv2.COLOR_BayerGR2RGB, demosaic=True),
    "bayer_grbg8": _E(1, 8, cv2.COLOR_BayerGB2RGB, demosaic=True),
    "bayer_rggb16": _E(1, 16, cv2.COLOR_BayerBG2RGB, demosaic=True),
    "bayer_bggr16": _E(1, 16, cv2.COLOR_BayerRG2RGB, demosaic=True),
    "bayer_gbrg16": _E(1, 16, cv2.COLOR_BayerGR2RGB, demosaic=True),
    "bayer_grbg16": _E(1, 16, cv2.COLOR_BayerGB2RGB, demosaic=True),
}

# Compressed formats OpenCV cannot turn into a colour picture, with the fix to suggest.
_UNSUPPORTED_COMPRESSED = {
    "compresseddepth": "depth images are not camera frames; subscribe to a colour image topic",
    "h264": "video codecs need a decoder node; use the raw or jpeg/png (compressed) transport",
    "h265": "video codecs need a decoder node; use the raw or jpeg/png (compressed) transport",
    "hevc": "video codecs need a decoder node; use the raw or jpeg/png (compressed) transport",
    "theora": "theora needs its transport plugin; use the raw or jpeg/png (compressed) transport",
    "ffmpeg": "video codecs need a decoder node; use the raw or jpeg/png (compressed) transport",
}

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def _encoding(name: str) -> _Encoding:
    spec = ENCODINGS.get(name)
    if spec is None:
        known = ", ".join(sorted(ENCODINGS))
        raise DecodeError(
            "unsupported_encoding",
            f"image encoding '{loggable(name, 40)}' is not supported; publish one of: {known}",
        )
    return spec


def _row_bytes(image: RawImage, spec: _Encoding) -> int:
    return image.width * spec.channels * spec.depth // 8


def check_raw(image: RawImage) -> None:
    """Cheap checks of an Image's header against its data length (no pixel is read).

    Raises DecodeError for an unknown encoding, a zero/odd size the encoding cannot have, a
    `step` shorter than a row, or data shorter than `step` * rows.
    """
    spec = _encoding(image.encoding)
    if image.height <= 0 or image.width <= 0:
        raise DecodeError("bad_size", f"image size {image.width}x{image.height} is empty")
    if spec.channels == 2 and image.width % 2:
        raise DecodeError("bad_size", f"{image.encoding} needs an even width, got {image.width}")
    if spec.rows_factor != 1.0 and (image.height % 2 or image.width % 2):
        raise DecodeError("bad_size", f"{image.encoding} needs even sides, got "
                          f"{image.width}x{image.height}")
    row_bytes = _row_bytes(image, spec)
    if image.step < row_bytes:
        raise DecodeError(
            "bad_step",
            f"step {image.step} is shorter than one row of {image.width} {image.encoding} pixels "
            f"({row_bytes} bytes); the publisher must set step >= width * bytes per pixel",
        )
    rows = int(image.height * spec.rows_factor)
    needed = image.step * (rows - 1) + row_bytes
    nbytes = memoryview(image.data).nbytes
    if nbytes < needed:
        raise DecodeError(
            "truncated",
            f"image data has {nbytes} bytes, "
            f"{image.width}x{image.height} {image.encoding} with step {image.step} needs {needed}",
        )
    _check_pixels(image.height, image.width)


def _check_pixels(height: int, width: int) -> None:
    if height * width > MAX_SOURCE_PIXELS:
        raise DecodeError(
            "image_too_large",
            f"image of {width}x{height} ({height * width / 1e6:.1f} Mpx) is over the "
            f"{MAX_SOURCE_PIXELS / 1e6:.1f} Mpx decode limit; publish a smaller image",
        )


def _pixels(image: RawImage, spec: _Encoding) -> np.ndarray:
    """The stored values as a (rows, width[, channels]) array in native byte order, without
    copying when the data already is native and unpadded."""
    check_raw(image)
    itemsize = spec.depth // 8
    dtype = np.dtype(np.uint8) if itemsize == 1 else np.dtype(">u2" if image.is_bigendian else "<u2")
    rows = int(image.height * spec.rows_factor)
    buffer = np.frombuffer(image.data, np.uint8)
    shape = (rows, image.width, spec.channels)
    strides = (image.step, spec.channels * itemsize, itemsize)
    pixels = np.ndarray(shape, dtype, buffer=buffer, offset=0, strides=strides)
    if spec.channels == 1:
        pixels = pixels[:, :, 0]
    if itemsize == 2 and image.is_bigendian != _NATIVE_BIG_ENDIAN:
        pixels = pixels.astype(np.uint16)  # byte-swapping copy into native order
    return pixels


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """16 -> 8 bits as cv_bridge (convertTo, scale 255/65535, rounded) = round(v / 257); v / 257
    is never within 0.002 of a half, so float rounding cannot differ."""
    if values.dtype != np.uint16:
        return values
    return cv2.convertScaleAbs(np.ascontiguousarray(values), alpha=255.0 / 65535.0)


def _convert_colour(values: np.ndarray, spec: _Encoding) -> np.ndarray:
    """Stored values -> RGB uint8 with cv_bridge's result: colour conversion, then 16 -> 8 bits.
    Conversions that only move channels (all but Bayer) give the same result in the other
    order, which is cheaper (a third of the values to scale for mono16)."""
    if not spec.demosaic:
        values = _to_8bit(values)
    if spec.cv_code is not None:
        values = cv2.cvtColor(np.ascontiguousarray(values), spec.cv_code)
    return np.ascontiguousarray(_to_8bit(values))


def raw_to_rgb(image: RawImage) -> np.ndarray:
    """A sensor_msgs/Image as full-size (height, width, 3) RGB uint8 (cv_bridge "rgb8")."""
    spec = _encoding(image.encoding)
    return _convert_colour(_pixels(image, spec), spec)


def _unsupported_compressed(fmt: str) -> str | None:
    lowered = fmt.lower().replace(" ", "")
    for key, fix in _UNSUPPORTED_COMPRESSED.items():
        if key in lowered:
            return fix
    return None


def check_compressed(image: CompressedImage) -> None:
    """Cheap checks of a CompressedImage: format, non-empty data and, when its header can be
    read, the size (nothing is decoded)."""
    fix = _unsupported_compressed(image.format)
    if fix is not None:
        raise DecodeError("unsupported_format", f"compressed format '{loggable(image.format, 60)}': {fix}")
    if memoryview(image.data).nbytes == 0:
        raise DecodeError("truncated", "compressed image has no data")
    size = compressed_size(image.data)
    if size is not None:
        _check_pixels(*size)


def compressed_size(data) -> tuple[int, int] | None:
    """(height, width) from a JPEG or PNG header, or None if data is neither (or unreadable)."""
    try:
        return jpeg_size(data) or png_size(data)
    except (TypeError, ValueError):
        return None


def jpeg_size(data) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header (SOFn marker), or None if data is no JPEG."""
    buffer = memoryview(data).cast("B")
    if len(buffer) < 4 or buffer[0] != 0xFF or buffer[1] != 0xD8:
        return None
    i = 2
    while i + 9 <= len(buffer):
        if buffer[i] != 0xFF:
            return None
        marker = buffer[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (buffer[i + 5] << 8 | buffer[i + 6], buffer[i + 7] << 8 | buffer[i + 8])
        i += 2 + (buffer[i + 2] << 8 | buffer[i + 3])
    return None


def png_size(data) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, or None if data is no PNG."""
    buffer = memoryview(data).cast("B")
    if len(buffer) < 24 or bytes(buffer[:8]) != b"\x89PNG\r\n\x1a\n" or bytes(buffer[12:16]) != b"IHDR":
        return None
    return int.from_bytes(buffer[20:24], "big"), int.from_bytes(buffer[16:20], "big")


def source_size(image) -> tuple[int, int] | None:
    """(height, width) of a camera image before any resize, when it can be read cheaply."""
    if isinstance(image, RawImage):
        return image.height, image.width
    if isinstance(image, CompressedImage):
        return compressed_size(image.data)
    return None


_REDUCED_READS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                  (2, cv2.IMREAD_REDUCED_COLOR_2))


def _decode_compressed(image: CompressedImage, min_size: tuple[int, int] | None) -> np.ndarray:
    """imdecode to RGB; for a JPEG that only needs to be >= min_size, libjpeg scales it down
    by 2, 4 or 8 while decoding (several times faster than decoding the full picture)."""
    check_compressed(image)
    header = compressed_size(image.data)
    if header is None:
        raise DecodeError(
            "corrupt_compressed",
            f"compressed image of {memoryview(image.data).nbytes} bytes has no readable JPEG or "
            "PNG header (only those are decoded: their size is checked before decoding)",
        )
    buffer = np.frombuffer(image.data, np.uint8)
    flag = cv2.IMREAD_COLOR
    size = jpeg_size(image.data) if min_size is not None else None
    if size is not None:
        for factor, reduced in _REDUCED_READS:
            if size[0] // factor >= min_size[0] and size[1] // factor >= min_size[1]:
                flag = reduced
                break
    decoded = cv2.imdecode(buffer, flag)
    if decoded is None:
        raise DecodeError(
            "corrupt_compressed",
            f"could not decode a '{loggable(image.format or 'compressed', 40)}' image of "
            f"{memoryview(image.data).nbytes} bytes (corrupt or not jpeg/png)",
        )
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def compressed_to_rgb(image: CompressedImage) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg or png) as full-size RGB.

    OpenCV decodes to BGR whatever the format string says (image_transport's compressed plugin
    stores colour images as bgr8), so the result is converted BGR -> RGB, as cv_bridge does.
    """
    return _decode_compressed(image, None)


def to_rgb(image: RawImage | CompressedImage) -> np.ndarray:
    """Either input type as full-size RGB uint8."""
    if isinstance(image, CompressedImage):
        return compressed_to_rgb(image)
    return raw_to_rgb(image)


def _target_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    try:
        return roma_frame_size(height, width, max_pixels=max_pixels)
    except ValueError as exc:
        raise DecodeError("bad_size", str(exc)) from exc


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (anti-aliased, like the model's own bicubic-with-support
    resize), bicubic when enlarging tiny images.

    Shrinking by more than 2x first averages whole f x f blocks (OpenCV's fast integer-ratio
    path; the last < f rows/columns are cropped, under 0.5% of a side) and then area-resizes
    the rest of the way: 3x faster than one fractional area resize at 1080p, same look.
    """
    height, width = size
    if values.shape[:2] == (height, width):
        return values
    shrinking = height * width <= values.shape[0] * values.shape[1]
    if not shrinking:
        return cv2.resize(values, (width, height), interpolation=cv2.INTER_CUBIC)
    factor = min(values.shape[0] // height, values.shape[1] // width)
    if factor >= 2:
        rows = values.shape[0] // factor * factor
        cols = values.shape[1] // factor * factor
        values = cv2.resize(values[:rows, :cols], (cols // factor, rows // factor),
                            interpolation=cv2.INTER_AREA)
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA)


def resize_to_roma(rgb: np.ndarray, max_pixels: int = ROMA_MAX_PIXELS) -> np.ndarray:
    """A full-size RGB frame resized by the ROMA rule (area <= max_pixels, sides multiples of
    28)."""
    size = _target_size(rgb.shape[0], rgb.shape[1], max_pixels)
    return np.ascontiguousarray(_resize(rgb, size))


def decode_frame(image: RawImage | CompressedImage, max_pixels: int = ROMA_MAX_PIXELS,
                 sizing: FrameSizing | None = None) -> np.ndarray:
    """Decode and resize one camera image: (h, w, 3) RGB uint8 of the model's size.

    `sizing` (the model profile's frame rule) wins over `max_pixels`. The "release" rule decodes
    the full frame and resizes it with PIL as the released code does; the "grid" rule uses the
    fast paths described in the module docstring.
    Raises DecodeError (a ValueError) with a `reason` for anything that is not a valid image.
    """
    if sizing is not None and sizing.rule == "release":
        rgb = to_rgb(image)
        try:
            return release_resize(rgb, sizing)
        except ValueError as exc:
            raise DecodeError("bad_size", str(exc)) from exc
    if sizing is not None:
        max_pixels = sizing.max_pixels
    if isinstance(image, CompressedImage):
        size = jpeg_size(image.data)
        target = _target_size(*size, max_pixels) if size is not None else None
        rgb = _decode_compressed(image, target)
        if size is not None:  # sides after a reduced decode round up: size it from the original
            return np.ascontiguousarray(_resize(rgb, target))
        return resize_to_roma(rgb, max_pixels)
    spec = _encoding(image.encoding)
    size = _target_size(image.height, image.width, max_pixels)
    if spec.resize_first:
        pixels = _pixels(image, spec)
        return _convert_colour(_resize(pixels, size), spec)
    return np.ascontiguousarray(_resize(raw_to_rgb(image), size))
