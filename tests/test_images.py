"""Image decoding policy and bad-input refusal of pmsfc_jax.io.images; atomic writes of io.files."""

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pmsfc_jax.io import files
from pmsfc_jax.io import images as imageio


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None = None) -> bytes:
  """A PNG written by hand (lets us build 16-bit RGB files and headers that lie about their size)."""
  ihdr = struct.pack('>IIBBBBB', width, height, bit_depth, color_type, 0, 0, 0)
  out = b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr)
  if rows is not None:
    out += _png_chunk(b'IDAT', zlib.compress(rows))
  return out + _png_chunk(b'IEND', b'')


def encode(img: Image.Image, fmt='PNG', **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kw)
  return buf.getvalue()


def gradient(w=24, h=24) -> np.ndarray:
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (w + h)], -1).astype(
    np.uint8
  )


def u8(img_float):
  return imageio.to_uint8(img_float)


@pytest.mark.parametrize('mode', ['L', '1', 'P', 'RGB'])
def test_color_modes_become_rgb_of_the_same_picture(mode):
  rgb = Image.fromarray(gradient())
  src = rgb.convert(mode)
  got = u8(imageio.decode(encode(src)))
  np.testing.assert_array_equal(got, np.asarray(src.convert('RGB')))
  assert got.shape == (24, 24, 3)


def test_alpha_is_composited_on_white():
  arr = np.zeros((4, 4, 4), np.uint8)
  arr[..., 0] = 200
  arr[0, 0, 3] = 0  # transparent -> white
  arr[1, 1, 3] = 255  # opaque -> its colour
  arr[2, 2, 3] = 128  # half -> mix
  got = u8(imageio.decode(encode(Image.fromarray(arr, 'RGBA'))))
  np.testing.assert_array_equal(got[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(got[1, 1], [200, 0, 0])
  np.testing.assert_allclose(got[2, 2].astype(int), [228, 127, 127], atol=1)


def test_palette_with_transparency_and_la():
  p = Image.new('P', (2, 1))
  p.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
  p.putpixel((0, 0), 0)
  p.putpixel((1, 0), 1)
  got = u8(imageio.decode(encode(p, transparency=0)))
  np.testing.assert_array_equal(got[0], [[255, 255, 255], [40, 50, 60]])
  la = Image.fromarray(np.array([[[80, 0], [80, 255]]], np.uint8), 'LA')
  np.testing.assert_array_equal(u8(imageio.decode(encode(la)))[0], [[255] * 3, [80] * 3])


def test_16bit_gray_and_rgb():
  g16 = np.array([[0, 65535, 32896, 257 * 7]], np.uint16)
  got = u8(imageio.decode(encode(Image.fromarray(g16))))
  np.testing.assert_array_equal(got[0, :, 0], [0, 255, 128, 7])
  # A dark 16-bit image stays dark (scaling follows the mode, not the pixel values).
  dark = np.full((2, 2), 200, np.uint16)
  assert u8(imageio.decode(encode(Image.fromarray(dark)))).max() == 1
  # 16-bit RGB PNG, written by hand (Pillow cannot write one).
  px = np.array([[[65535, 0, 257 * 100], [0, 32896, 65535]]], '>u2')
  rows = b''.join(b'\x00' + px[r].tobytes() for r in range(px.shape[0]))
  got = u8(imageio.decode(raw_png(2, 1, 16, 2, rows)))
  np.testing.assert_array_equal(got[0], [[255, 0, 100], [0, 128, 255]])


def test_cmyk_jpeg():
  cmyk = Image.new('CMYK', (8, 8), (0, 255, 255, 0))  # pure red in naive CMYK
  got = u8(imageio.decode(encode(cmyk, 'JPEG', quality=100)))
  assert got.shape == (8, 8, 3)
  np.testing.assert_allclose(got.reshape(-1, 3).mean(0), [255, 0, 0], atol=3)


def test_exif_orientation_is_applied():
  arr = np.zeros((4, 8, 3), np.uint8)  # landscape, left half red
  arr[:, :4, 0] = 255
  img = Image.fromarray(arr)
  exif = img.getexif()
  exif[0x0112] = 6  # rotate 90 CW to display
  got = u8(imageio.decode(encode(img, 'PNG', exif=exif)))
  assert got.shape == (8, 4, 3)  # portrait after transposition
  np.testing.assert_array_equal(got[:4, :, 0], 255)  # the red half is now on top
  np.testing.assert_array_equal(got[4:, :, 0], 0)


def test_non_square_center_crop_and_pad_any_size():
  arr = np.zeros((10, 30, 3), np.uint8)
  arr[:, 10:20] = 255  # white centre square, black sides
  data = encode(Image.fromarray(arr))
  crop = imageio.decode(data, size=10, crop='center')
  np.testing.assert_array_equal(u8(crop), 255)
  pad = u8(imageio.decode(data, size=30, crop='pad'))
  assert pad.shape == (30, 30, 3)
  np.testing.assert_array_equal(pad[:10], 255)  # white padding rows
  np.testing.assert_array_equal(pad[10:20, :10], 0)  # image content
  for size in (1, 7, 16, 64):
    out = imageio.decode(encode(Image.fromarray(gradient(13, 5))), size=size)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    assert -1.0 <= out.min() and out.max() <= 1.0
  with pytest.raises(ValueError, match="crop must be 'center' or 'pad', got 'zoom'"):
    imageio.decode(data, size=8, crop='zoom')


def bad_inputs():
  good_png = encode(Image.fromarray(gradient(32, 32)))
  good_jpg = encode(Image.fromarray(gradient(32, 32)), 'JPEG')
  return {
    'zero-byte': (b'', r'empty file \(0 bytes\)'),
    'text': (b'hello, I am not a picture\n' * 4, 'not an image Pillow can identify'),
    'truncated-png': (good_png[: len(good_png) // 2], r'(truncated file|cannot decode) \('),
    'truncated-jpeg': (good_jpg[: len(good_jpg) // 2], r'truncated file \(OSError'),
    'bomb': (
      raw_png(100_000, 100_000, 8, 2),
      r'refused as a decompression bomb: .*10000000000 pixels.* exceeds (the )?limit',
    ),
  }


@pytest.mark.parametrize('kind', sorted(bad_inputs()))
def test_bad_input_is_refused_naming_file_and_reason(kind, tmp_path):
  data, reason = bad_inputs()[kind]
  path = tmp_path / f'{kind}.png'
  path.write_bytes(data)
  with pytest.raises(imageio.ImageDecodeError, match=f'^{re.escape(str(path))}: {reason}') as e:
    imageio.load_image(path, size=16)
  assert e.value.path == str(path)


def test_bomb_between_one_and_two_times_the_limit_is_refused(monkeypatch):
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  data = encode(Image.new('RGB', (40, 40)))  # 1600 px: Pillow alone would only warn
  with (
    pytest.warns(Image.DecompressionBombWarning),
    pytest.raises(imageio.ImageDecodeError, match='decompression bomb: 40x40 = 1600 pixels'),
  ):
    imageio.decode(data, 'x.png')


def test_unreadable_paths(tmp_path):
  (tmp_path / 'dir.png').mkdir()
  with pytest.raises(imageio.ImageDecodeError, match='dir.png: cannot read: is a directory'):
    imageio.load_image(tmp_path / 'dir.png')
  (tmp_path / 'dangling.png').symlink_to(tmp_path / 'nowhere.png')
  with pytest.raises(imageio.ImageDecodeError, match=r'dangling.png: cannot read \(FileNotFoundError'):
    imageio.load_image(tmp_path / 'dangling.png')


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
  target = tmp_path / 'sub' / 'a.png'
  seen = []
  replace = files.replace

  def hook(src, dst):  # Just before the rename: only the temporary file exists.
    seen.extend(p.name for p in target.parent.iterdir())
    assert not target.exists()
    replace(src, dst)

  monkeypatch.setattr(files, 'replace', hook)
  img = np.linspace(-1, 1, 4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
  files.atomic_write_bytes(target, imageio.encode_png(img))
  assert len(seen) == 1 and seen[0].startswith('.a.png' + files.TMP_MARKER)
  assert [p.name for p in target.parent.iterdir()] == ['a.png']
  np.testing.assert_array_equal(u8(imageio.load_image(target)), imageio.to_uint8(img))
