"""Image decoding: every encoding against hand-encoded known pixels, step padding, endianness,
compressed formats, the ROMA resize, and clear errors for bad input."""
import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image

from roma_ros.core.errors import DecodeError
from roma_ros.core.image_decode import (
    ENCODINGS,
    CompressedImage,
    RawImage,
    check_raw,
    decode_frame,
    raw_to_rgb,
    resize_to_roma,
    to_rgb,
)
from roma_ros.pipeline.convert import raw_image_from_msg

RNG = np.random.default_rng(7)
H, W = 6, 8


def pack(values: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> RawImage:
    """Hand-encode (rows, width[, channels]) values as an Image with `pad` garbage bytes per row."""
    rows, width = values.shape[:2]
    if values.dtype == np.uint16:
        values = values.astype(">u2" if big_endian else "<u2")
    row = values.reshape(rows, -1).view(np.uint8).reshape(rows, -1)
    garbage = RNG.integers(0, 256, (rows, pad), dtype=np.uint8)
    data = np.concatenate([row, garbage], axis=1).tobytes()
    height = rows if encoding != "nv21" else rows * 2 // 3
    return RawImage(height, width, encoding, row.shape[1] + pad, data, big_endian)


def rgb_image() -> np.ndarray:
    return RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize(
    "encoding, channels",
    [("rgb8", [0, 1, 2]), ("8UC3", [0, 1, 2]), ("bgr8", [2, 1, 0]), ("rgba8", [0, 1, 2, None]),
     ("bgra8", [2, 1, 0, None])],
)
def test_8bit_colour_encodings(encoding, channels, pad):
    rgb = rgb_image()
    alpha = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    stored = np.stack([alpha if c is None else rgb[:, :, c] for c in channels], axis=2)
    assert np.array_equal(raw_to_rgb(pack(stored, encoding, pad)), rgb)


@pytest.mark.parametrize("pad", [0, 3])
def test_mono8_is_grey_replicated(pad):
    grey = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    assert np.array_equal(raw_to_rgb(pack(grey, "mono8", pad)), np.stack([grey] * 3, axis=2))


def expected_8bit(values16: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 -> 8 bit: convertTo(scale=255/65535) rounds to nearest."""
    return np.rint(values16.astype(np.float64) * 255 / 65535).astype(np.uint8)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("pad", [0, 3])
def test_mono16_scaled_like_cv_bridge(big_endian, pad):
    grey = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    grey[0, :4] = [0, 128, 129, 65535]  # 128/257 rounds down, 129/257 up
    out = raw_to_rgb(pack(grey, "mono16", pad, big_endian))
    assert np.array_equal(out, np.stack([expected_8bit(grey)] * 3, axis=2))
    assert list(out[0, :4, 0]) == [0, 0, 1, 255]


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize(
    "encoding, channels",
    [("rgb16", [0, 1, 2]), ("bgr16", [2, 1, 0]), ("rgba16", [0, 1, 2, None]),
     ("bgra16", [2, 1, 0, None])],
)
def test_16bit_colour_encodings(encoding, channels, big_endian):
    rgb16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    alpha = np.full((H, W), 65535, np.uint16)
    stored = np.stack([alpha if c is None else rgb16[:, :, c] for c in channels], axis=2)
    assert np.array_equal(raw_to_rgb(pack(stored, encoding, 1, big_endian)), expected_8bit(rgb16))


def bt601_video_range(y, u, v) -> np.ndarray:
    """ITU-R BT.601 limited-range YCbCr -> RGB (what OpenCV's YUV 4:2:2 / NV21 codes use)."""
    y, u, v = (np.asarray(x, np.float64) for x in (y, u, v))
    c = 1.164 * (y - 16)
    rgb = np.stack([c + 1.596 * (v - 128), c - 0.813 * (v - 128) - 0.391 * (u - 128),
                    c + 2.018 * (u - 128)], axis=-1)
    return np.clip(np.rint(rgb), 0, 255)


# (Y, U, V) of black, white, mid grey, and BT.601 red, green, blue.
YUV_PIXELS = [(16, 128, 128), (235, 128, 128), (126, 128, 128), (81, 90, 240), (145, 54, 34),
              (41, 240, 110)]


@pytest.mark.parametrize("encoding, order", [("yuv422", "UYVY"), ("uyvy", "UYVY"),
                                             ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")])
def test_yuv422(encoding, order):
    # each pixel pair shares U and V: one known colour per pair
    ys, us, vs = np.array(YUV_PIXELS).T
    y = np.repeat(ys, 2)[None, :]
    u = us[None, :]
    v = vs[None, :]
    packed = np.zeros((1, y.shape[1], 2), np.uint8)
    if order == "UYVY":
        packed[0, 0::2, 0], packed[0, 1::2, 0] = u, v
        packed[0, :, 1] = y
    else:
        packed[0, :, 0] = y
        packed[0, 0::2, 1], packed[0, 1::2, 1] = u, v
    out = raw_to_rgb(pack(packed, encoding, pad=2))
    expected = bt601_video_range(y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1))
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert list(out[0, 0]) == [0, 0, 0] and list(out[0, 2]) == [255, 255, 255]


def test_nv21():
    # 2x2 blocks share one V,U pair (V first in NV21)
    ys, us, vs = np.array(YUV_PIXELS[:4]).T
    width = 2 * len(ys)
    y_plane = np.repeat(np.repeat(ys, 2)[None, :], 2, axis=0).astype(np.uint8)
    vu = np.stack([vs, us], axis=1).reshape(1, width).astype(np.uint8)
    out = raw_to_rgb(pack(np.concatenate([y_plane, vu]), "nv21", pad=4))
    expected = bt601_video_range(y_plane, np.repeat(np.repeat(us, 2)[None], 2, 0),
                                 np.repeat(np.repeat(vs, 2)[None], 2, 0))
    assert out.shape == (2, width, 3)
    assert np.abs(out.astype(int) - expected).max() <= 1


BAYER_OFFSETS = {  # where R, G (two) and B sit in the 2x2 tile, by ROS pattern name
    "rggb": {"R": [(0, 0)], "G": [(0, 1), (1, 0)], "B": [(1, 1)]},
    "bggr": {"B": [(0, 0)], "G": [(0, 1), (1, 0)], "R": [(1, 1)]},
    "gbrg": {"G": [(0, 0), (1, 1)], "B": [(0, 1)], "R": [(1, 0)]},
    "grbg": {"G": [(0, 0), (1, 1)], "R": [(0, 1)], "B": [(1, 0)]},
}


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    out = np.zeros(rgb.shape[:2], rgb.dtype)
    for channel, name in enumerate("RGB"):
        for dy, dx in BAYER_OFFSETS[pattern][name]:
            out[dy::2, dx::2] = rgb[dy::2, dx::2, channel]
    return out


@pytest.mark.parametrize("pattern", list(BAYER_OFFSETS))
def test_bayer8_uniform_colour_is_exact(pattern):
    """A uniform scene seen through the pattern demosaics back to exactly its colour: this
    proves the ROS pattern -> OpenCV code mapping (rggb = OpenCV BayerBG, as in cv_bridge)."""
    colour = np.array([200, 90, 30], np.uint8)
    scene = np.broadcast_to(colour, (8, 10, 3)).copy()
    out = raw_to_rgb(pack(mosaic(scene, pattern), f"bayer_{pattern}8", pad=3))
    assert np.array_equal(out[1:-1, 1:-1], scene[1:-1, 1:-1])


@pytest.mark.parametrize("pattern", list(BAYER_OFFSETS))
def test_bayer8_matches_cv_bridge_codes(pattern):
    cv_bridge_code = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
                      "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}[pattern]
    raw = RNG.integers(0, 256, (8, 10), dtype=np.uint8)
    assert np.array_equal(raw_to_rgb(pack(raw, f"bayer_{pattern}8")), cv2.cvtColor(raw, cv_bridge_code))


@pytest.mark.parametrize("big_endian", [False, True])
def test_bayer16_uniform_colour(big_endian):
    colour16 = np.array([51400, 23130, 7710], np.uint16)  # 200, 90, 30 times 257
    scene = np.broadcast_to(colour16, (8, 10, 3)).copy()
    out = raw_to_rgb(pack(mosaic(scene, "rggb"), "bayer_rggb16", 2, big_endian))
    assert np.array_equal(out[1:-1, 1:-1], np.broadcast_to([200, 90, 30], (6, 8, 3)))


def test_every_encoding_is_tested():
    tested = {"rgb8", "8UC3", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "bgr16",
              "rgba16", "bgra16", "yuv422", "uyvy", "yuv422_yuy2", "yuyv", "nv21"}
    tested |= {f"bayer_{p}{d}" for p in BAYER_OFFSETS for d in (8, 16)}
    assert tested == set(ENCODINGS)


def test_png_is_lossless_and_rgb():
    rgb = rgb_image()
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    for fmt in ("png", "bgr8; png compressed bgr8", ""):
        assert np.array_equal(to_rgb(CompressedImage(fmt, png.tobytes())), rgb)


def test_jpeg_solid_colour():
    rgb = np.broadcast_to(np.array([220, 40, 90], np.uint8), (48, 64, 3)).copy()
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = to_rgb(CompressedImage("rgb8; jpeg compressed bgr8", array.array("B", jpeg.tobytes())))
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 3


def sample_image(encoding: str, height: int = 480, width: int = 640) -> RawImage:
    spec = ENCODINGS[encoding]
    rows = int(height * spec.rows_factor)
    dtype = np.uint16 if spec.depth == 16 else np.uint8
    top = 65536 if spec.depth == 16 else 256
    values = RNG.integers(0, top, (rows, width, spec.channels), dtype=dtype)
    raw = pack(values if spec.channels > 1 else values[:, :, 0], encoding, pad=8)
    return RawImage(height, width, encoding, raw.step, raw.data)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_decode_frame_equals_convert_then_resize(encoding):
    """The fast path (resize before colour conversion) gives exactly the reference result."""
    image = sample_image(encoding)
    frame = decode_frame(image)
    assert frame.shape == (196, 280, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    assert np.array_equal(frame, resize_to_roma(raw_to_rgb(image)))


@pytest.mark.parametrize("size, expected", [((480, 640), (196, 280)), ((1080, 1920), (168, 336)),
                                            ((360, 640), (168, 336)), ((20, 30), (56, 84))])
def test_roma_size(size, expected):
    frame = decode_frame(RawImage(*size, "rgb8", size[1] * 3, bytes(size[0] * size[1] * 3)))
    assert frame.shape[:2] == expected
    assert frame.shape[0] % 28 == 0 and frame.shape[1] % 28 == 0


def test_max_pixels_parameter():
    frame = decode_frame(RawImage(480, 640, "rgb8", 1920, bytes(480 * 1920)), max_pixels=200_000)
    assert frame.shape[0] * frame.shape[1] <= 200_000 and frame.shape[:2] == (364, 504)


def test_from_ros_message_without_copy():
    msg = Image(height=2, width=3, encoding="bgr8", step=9)
    msg.data = array.array("B", range(18))
    raw = raw_image_from_msg(msg)
    assert raw.data is msg.data
    assert list(raw_to_rgb(raw)[0, 0]) == [2, 1, 0]


@pytest.mark.parametrize(
    "image, reason",
    [
        (RawImage(2, 2, "32FC1", 8, bytes(16)), "unsupported_encoding"),
        (RawImage(2, 2, "rgb8", 6, bytes(11)), "truncated"),
        (RawImage(2, 2, "rgb8", 5, bytes(12)), "bad_step"),
        (RawImage(0, 2, "rgb8", 6, b""), "bad_size"),
        (RawImage(2, 3, "yuv422", 6, bytes(12)), "bad_size"),
        (RawImage(1, 900, "mono8", 900, bytes(900)), "bad_size"),  # aspect ratio over 200
        (CompressedImage("16UC1; compressedDepth png", b"\x89PNG"), "unsupported_format"),
        (CompressedImage("jpeg", b"not a jpeg"), "corrupt_compressed"),
        (CompressedImage("jpeg", b""), "truncated"),
    ],
)
def test_bad_input_raises_typed_error(image, reason):
    with pytest.raises(DecodeError) as info:
        decode_frame(image)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError) and str(info.value)


def test_check_raw_reads_no_pixels():
    check_raw(RawImage(1080, 1920, "bgr8", 5760, memoryview(bytearray(1080 * 5760))))
    with pytest.raises(DecodeError, match="publish one of"):
        check_raw(RawImage(2, 2, "hsv8", 6, bytes(12)))


def test_jpeg_size_from_header():
    from roma_ros.core.image_decode import jpeg_size

    ok, jpeg = cv2.imencode(".jpg", np.zeros((37, 91, 3), np.uint8))
    assert jpeg_size(jpeg.tobytes()) == (37, 91)
    assert jpeg_size(b"\x89PNG\r\n") is None and jpeg_size(b"") is None


def test_reduced_jpeg_decode_matches_full_decode_closely():
    """1080p JPEGs are decoded at 1/4 scale: the ROMA frame differs from a full decode + resize
    by compression-level noise only."""
    y, x = np.mgrid[0:1080, 0:1920]
    scene = np.stack([x * 255 // 1920, y * 255 // 1080, (x // 40 % 2) * 200], axis=2).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 90])
    image = CompressedImage("jpeg", jpeg.tobytes())
    fast = decode_frame(image)
    reference = resize_to_roma(to_rgb(image))
    assert fast.shape == reference.shape == (168, 336, 3)
    assert np.abs(fast.astype(int) - reference).mean() < 2.0


def test_bayer16_demosaics_before_scaling_like_cv_bridge():
    raw = RNG.integers(0, 65536, (8, 10), dtype=np.uint16)
    expected = expected_8bit(cv2.cvtColor(raw, cv2.COLOR_BayerBG2RGB))
    assert np.array_equal(raw_to_rgb(pack(raw, "bayer_rggb16")), expected)


# --- size bound before decoding (security review) ---------------------------------------------
def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG of width x height zeros: a few hundred KB that decode to w*h*3 bytes (with
    `rows`, only that many rows of pixel data follow the header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + width)
    idat = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(height: int, width: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) is rewritten to claim height x width."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.fixture
def no_imdecode(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called on an image that should have been refused")

    monkeypatch.setattr(cv2, "imdecode", refuse)


@pytest.mark.parametrize("image", [
    CompressedImage("png", png_bomb(20000, 20000, rows=1)),  # the header is what counts
    CompressedImage("jpeg", jpeg_claiming(20000, 20000)),
    CompressedImage("jpeg", jpeg_claiming(4097, 4096)),
])
def test_oversized_compressed_images_are_refused_from_their_header(image, no_imdecode):
    from roma_ros.core.image_decode import check_compressed

    for check in (check_compressed, decode_frame):
        with pytest.raises(DecodeError) as info:
            check(image)
        assert info.value.reason == "image_too_large" and "Mpx decode limit" in str(info.value)


def test_a_20000x20000_png_bomb_is_refused_before_decoding(no_imdecode):
    from roma_ros.core.image_decode import MAX_SOURCE_PIXELS, png_size

    bomb = png_bomb(20000, 20000)  # ~390 KB; decoded it would be 1.2 GB
    assert len(bomb) < 500_000 and png_size(bomb) == (20000, 20000) > (0, 0)
    assert 20000 * 20000 > MAX_SOURCE_PIXELS
    with pytest.raises(DecodeError) as info:
        decode_frame(CompressedImage("png", bomb))
    assert info.value.reason == "image_too_large"


def test_images_at_the_bound_still_decode():
    ok, png = cv2.imencode(".png", np.zeros((4096, 4096, 3), np.uint8))
    assert decode_frame(CompressedImage("png", png.tobytes())).shape == (252, 252, 3)


def test_compressed_formats_whose_size_cannot_be_read_are_not_decoded(no_imdecode):
    bmp = cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(DecodeError) as info:
        decode_frame(CompressedImage("bmp", bmp))
    assert info.value.reason == "corrupt_compressed" and "JPEG or PNG header" in str(info.value)


def test_oversized_raw_images_are_refused_after_the_length_check():
    side = 4097
    with pytest.raises(DecodeError) as info:
        check_raw(RawImage(side, side, "mono8", side, memoryview(bytearray(side * side))))
    assert info.value.reason == "image_too_large"
    with pytest.raises(DecodeError) as info:  # a header alone proves nothing: truncated first
        check_raw(RawImage(60000, 60000, "rgb8", 180000, bytes(10)))
    assert info.value.reason == "truncated"


def test_outside_strings_in_errors_are_one_escaped_line():
    forged = "h264\n[ERROR] [1700000000.0] [engine]: forged\x1b[2J" + "x" * 1000
    with pytest.raises(DecodeError) as info:
        decode_frame(CompressedImage(forged, b"\x00"))
    text = str(info.value)
    assert "\n" not in text and "\x1b" not in text and "\\n[ERROR]" in text and len(text) < 300
    with pytest.raises(DecodeError) as info:
        decode_frame(RawImage(2, 2, "rgb8\r\x1b[31m" + "y" * 500, 6, bytes(12)))
    assert "\r" not in str(info.value) and "\x1b" not in str(info.value) and len(str(info.value)) < 1000
