"""Image decode / encode at the I/O edge: uint8 files <-> float32 HWC in [-1, 1].

Policy (documented once, used by every job; ``launch.invert`` resizes inputs with it):
* EXIF orientation is applied (``ImageOps.exif_transpose``); only the first frame of animated files is used.
* Alpha (RGBA, LA, PA, palette with transparency) is composited on a white background (mGANprior's
  examples with alpha are white-backed objects/faces).
* Grayscale (``1``, ``L``) is replicated to RGB; palette images are expanded; CMYK / YCbCr / LAB / HSV use
  Pillow's conversion to RGB (ICC profiles are ignored). 16-bit modes (``I;16*``) are scaled by 255/65535;
  32-bit integer ``I`` images are scaled by 255/65535 when their maximum exceeds 255 (otherwise taken as
  8-bit values); float ``F`` images are taken as [0, 1] when their maximum is <= 1, else as [0, 255].
  Every result is rounded to uint8 before ``to_float`` so all formats go through the same quantisation.
* Non-square images are centre-cropped to the largest centred square (``crop='center'``, default) or padded
  with white to a square (``crop='pad'``), then resized to the target size with Lanczos when downsampling
  and bicubic when upsampling (any input size is accepted).
* Pillow's decompression-bomb limit stays on: an image with more than ``Image.MAX_IMAGE_PIXELS`` pixels is
  refused before any pixel is decoded (Pillow itself only warns between 1x and 2x the limit; we refuse at
  1x). Raise the limit explicitly with ``PIL.Image.MAX_IMAGE_PIXELS = ...`` if you trust your inputs.
* Zero-byte, truncated (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set), non-image and unreadable files
  are refused.
* Reading (:func:`read_bytes`) is bounded: only regular files are opened (a FIFO, device or socket, also
  behind a symlink, is refused from its ``stat`` without being opened, so it can neither block nor
  stream forever); a file over ``max_bytes`` (``config.job.max_input_bytes``, 256 MiB by default) is
  refused from its size, and at most ``max_bytes + 1`` bytes are ever read; the first bytes must be
  the signature of a format of ``IMAGE_EXTENSIONS`` (PNG, JPEG, GIF, BMP, TIFF, WebP, PNM/PAM/PFM)
  before the rest is read and decoded.
Errors name the file and the reason (``ImageDecodeError``), so a batch job can log them and go on.
"""

from __future__ import annotations

import io
import os
import stat
from typing import BinaryIO, Optional

import numpy as np
from etils import epath
from PIL import Image
from PIL import ImageOps

from pmsfc_jax.core import config
from pmsfc_jax.io import files

BACKGROUND = (255, 255, 255)
# The image file name extensions (case-insensitive): what ``listing.list_inputs`` picks up in a directory
# and what ``evaluation.evaluate`` pairs.
IMAGE_EXTENSIONS = (
  '.png',
  '.jpg',
  '.jpeg',
  '.bmp',
  '.gif',
  '.tif',
  '.tiff',
  '.webp',
  '.ppm',
  '.pgm',
  '.pnm',
  '.pbm',
)


class ImageDecodeError(ValueError):
  """An image file that cannot be used; the message names the file and the reason."""

  def __init__(self, path, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f'{self.path}: {reason}')


def _to_rgb(img: Image.Image) -> Image.Image:
  """Any Pillow mode -> 8-bit RGB following the module policy."""
  mode = img.mode
  if mode.startswith('I;16'):
    arr = np.asarray(img).astype(np.float64)
    img = Image.fromarray(np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8), 'L')
  elif mode == 'I':
    arr = np.asarray(img).astype(np.float64)
    scale = 255.0 / 65535.0 if arr.size and arr.max() > 255 else 1.0
    img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), 'L')
  elif mode == 'F':
    arr = np.asarray(img).astype(np.float64)
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
    img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), 'L')
  if img.mode == 'P':
    img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
  if img.mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA'):
    img = img.convert('RGBA')
    bg = Image.new('RGBA', img.size, BACKGROUND + (255,))
    img = Image.alpha_composite(bg, img)
  return img.convert('RGB')


def square(img: Image.Image, crop: str = 'center') -> Image.Image:
  """Largest centred square crop (``'center'``) or white padding to a square (``'pad'``)."""
  w, h = img.size
  if crop not in ('center', 'pad'):
    raise ValueError(f"crop must be 'center' or 'pad', got {crop!r}")
  if w == h:
    return img
  if crop == 'center':
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))
  s = max(w, h)
  canvas = Image.new('RGB', (s, s), BACKGROUND)
  canvas.paste(img, ((s - w) // 2, (s - h) // 2))
  return canvas


def resize(img: Image.Image, size: int) -> Image.Image:
  """Square image -> ``size`` x ``size``: Lanczos when shrinking, bicubic when enlarging."""
  if img.size == (size, size):
    return img
  method = Image.LANCZOS if img.size[0] > size else Image.BICUBIC
  return img.resize((size, size), method)


def _check_bomb(img: Image.Image, path) -> None:
  limit = Image.MAX_IMAGE_PIXELS
  w, h = img.size
  if limit is not None and w * h > limit:
    raise ImageDecodeError(
      path,
      f'refused as a decompression bomb: {w}x{h} = {w * h} pixels exceeds '
      f'PIL.Image.MAX_IMAGE_PIXELS = {limit}',
    )
  if w <= 0 or h <= 0:
    raise ImageDecodeError(path, f'image has an empty size {w}x{h}')


def decode_pil(data: bytes, path='<bytes>') -> Image.Image:
  """Encoded bytes -> a fully decoded, upright 8-bit RGB Pillow image (module policy), or ImageDecodeError."""
  if not data:
    raise ImageDecodeError(path, 'empty file (0 bytes)')
  try:
    # Pillow warns (instead of raising) between 1x and 2x MAX_IMAGE_PIXELS; _check_bomb refuses those
    # before ``load`` decodes a single pixel.
    with Image.open(io.BytesIO(data)) as img:
      _check_bomb(img, path)
      img.load()
      img = ImageOps.exif_transpose(img)
      return _to_rgb(img)
  except ImageDecodeError:
    raise
  except Image.DecompressionBombError as e:
    raise ImageDecodeError(path, f'refused as a decompression bomb: {e}') from None
  except Image.UnidentifiedImageError:
    raise ImageDecodeError(path, 'not an image Pillow can identify') from None
  except MemoryError:
    raise ImageDecodeError(path, 'out of memory while decoding') from None
  except Exception as e:  # pylint: disable=broad-except
    # Truncated / corrupt streams surface as OSError, SyntaxError, EOFError, struct.error, zlib.error, ...
    reason = 'truncated file' if 'truncated' in str(e).lower() else 'cannot decode'
    raise ImageDecodeError(path, f'{reason} ({type(e).__name__}: {e})') from None


def decode(data: bytes, path='<bytes>', size: Optional[int] = None, crop: str = 'center') -> np.ndarray:
  """Encoded bytes -> float32 (H, W, 3) in [-1, 1], squared and resized to ``size`` when given."""
  img = decode_pil(data, path)
  if size is not None:
    img = resize(square(img, crop), int(size))
  return to_float(np.asarray(img))


# The first bytes of the formats of IMAGE_EXTENSIONS (PNM / PAM / PFM: 'P' + one of 1-7, f, F; WebP below).
SIGNATURES = (
  b'\x89PNG\r\n\x1a\n',
  b'\xff\xd8\xff',
  b'GIF87a',
  b'GIF89a',
  b'BM',
  b'II*\x00',
  b'MM\x00*',
  b'II+\x00',
  b'MM\x00+',
)
HEADER_BYTES = 16
_KINDS = {
  stat.S_IFIFO: 'a FIFO',
  stat.S_IFCHR: 'a character device',
  stat.S_IFBLK: 'a block device',
  stat.S_IFSOCK: 'a socket',
}


def known_header(header: bytes) -> bool:
  """Whether ``header`` (a file's first bytes) starts like an image format the jobs decode."""
  if header.startswith(SIGNATURES) or (header[:4] == b'RIFF' and header[8:12] == b'WEBP'):
    return True
  return len(header) >= 2 and header[:1] == b'P' and header[1:2] in b'1234567fF'


def _read_checked(f: BinaryIO, path, max_bytes: int) -> bytes:
  header = f.read(HEADER_BYTES)
  if not header:
    raise ImageDecodeError(path, 'empty file (0 bytes)')
  if not known_header(header):
    raise ImageDecodeError(path, 'not an image Pillow can identify (its first bytes match no image format)')
  data = header + f.read(max_bytes + 1 - len(header))
  if len(data) > max_bytes:
    raise ImageDecodeError(
      path, f'larger than the input size limit of {max_bytes} bytes (config.job.max_input_bytes)'
    )
  return data


def _read_local(path: str, max_bytes: int) -> bytes:
  st = os.stat(path)  # follows symlinks; opens nothing
  if stat.S_ISDIR(st.st_mode):
    raise ImageDecodeError(path, 'cannot read: is a directory')
  if not stat.S_ISREG(st.st_mode):
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')
    raise ImageDecodeError(path, f'not a regular file ({kind}): not opened')
  if st.st_size > max_bytes:
    raise ImageDecodeError(
      path,
      f'{st.st_size} bytes exceeds the input size limit of {max_bytes} bytes (config.job.max_input_bytes)',
    )
  fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_NOCTTY', 0))
  with os.fdopen(fd, 'rb') as f:
    now = os.fstat(f.fileno())
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
      raise ImageDecodeError(path, 'replaced while being opened: not read')
    return _read_checked(f, path, max_bytes)


def read_bytes(path, max_bytes: Optional[int] = None) -> bytes:
  """A file's bytes, read within the module's bounds (regular files only, at most ``max_bytes``:
  default ``config.Job.max_input_bytes``, header checked first); any failure becomes an
  ``ImageDecodeError`` naming the file."""
  max_bytes = config.Job.max_input_bytes if max_bytes is None else int(max_bytes)
  try:
    if files.is_local(path):
      return _read_local(os.fspath(path), max_bytes)
    with epath.Path(path).open('rb') as f:  # object stores hold no special files
      return _read_checked(f, path, max_bytes)
  except ImageDecodeError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ImageDecodeError(path, f'cannot read ({type(e).__name__}: {e})') from None


def load_image(
  path, size: Optional[int] = None, crop: str = 'center', max_bytes: Optional[int] = None
) -> np.ndarray:
  """Reads an image file -> float32 (H, W, 3) in [-1, 1] (see the module policy; ``max_bytes``: the
  input size limit, default ``config.Job.max_input_bytes``)."""
  return decode(read_bytes(path, max_bytes), path, size, crop)


def to_float(img_uint8: np.ndarray) -> np.ndarray:
  return img_uint8.astype(np.float32) / 127.5 - 1.0


def to_uint8(img: np.ndarray) -> np.ndarray:
  """float in [-1, 1] -> uint8 (rounded, clipped)."""
  return np.clip(np.rint((np.asarray(img, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_image(path, img: np.ndarray) -> None:
  """Writes a float [-1, 1] HWC (or HW) image as PNG atomically (temporary name + rename)."""
  files.atomic_write_bytes(path, encode_png(img))


def encode_png(img: np.ndarray) -> bytes:
  """float [-1, 1] HWC (or HW / HW1) image -> PNG bytes."""
  arr = to_uint8(img)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format='PNG')
  return buf.getvalue()


def make_grid(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
  """(N, H, W, C) float images -> one (rows*(H+pad)-pad, ...) grid image, white padding."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  nrows = -(-n // ncols)
  grid = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), images.dtype)
  for i in range(n):
    r, col = divmod(i, ncols)
    grid[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = images[i]
  return grid
