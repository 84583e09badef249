"""Image decode / encode at the I/O edge: uint8 files <-> float32 HWC in [-1, 1].

Policy (documented once, used by every job):
* EXIF orientation is applied (``ImageOps.exif_transpose``).
* Alpha (RGBA, LA, palette with transparency) is composited on a white background (mGANprior's examples
  with alpha are white-backed objects/faces); grayscale, palette, CMYK and 16-bit images become RGB.
* Non-square images are centre-cropped to the largest square, then resized to the target size with
  Lanczos (downsampling) / bicubic (upsampling). ``crop='pad'`` pads with white instead of cropping.
* Pillow's decompression-bomb limit is left on: such files are refused.
Errors name the file and the reason (``ImageDecodeError``), so a batch job can log them and go on.
"""

from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np
from etils import epath
from PIL import Image, ImageOps

BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
  """An image file that cannot be used; the message names the file and the reason."""

  def __init__(self, path, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f'{self.path}: {reason}')


def _to_rgb(img: Image.Image) -> Image.Image:
  if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
    arr = np.asarray(img, dtype=np.float64)
    hi = 65535.0 if arr.max() > 255 else 255.0
    img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), 'L')
  if img.mode == 'P':
    img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
  if img.mode in ('RGBA', 'LA', 'PA'):
    img = img.convert('RGBA')
    bg = Image.new('RGBA', img.size, BACKGROUND + (255,))
    img = Image.alpha_composite(bg, img)
  return img.convert('RGB')


def square(img: Image.Image, crop: str = 'center') -> Image.Image:
  w, h = img.size
  if w == h:
    return img
  if crop == 'center':
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))
  if crop == 'pad':
    s = max(w, h)
    canvas = Image.new('RGB', (s, s), BACKGROUND)
    canvas.paste(img, ((s - w) // 2, (s - h) // 2))
    return canvas
  raise ValueError(f"crop must be 'center' or 'pad', got {crop!r}")


def resize(img: Image.Image, size: int) -> Image.Image:
  if img.size == (size, size):
    return img
  method = Image.LANCZOS if img.size[0] > size else Image.BICUBIC
  return img.resize((size, size), method)


def decode(data: bytes, path='<bytes>', size: Optional[int] = None, crop: str = 'center') -> np.ndarray:
  """Encoded bytes -> float32 (H, W, 3) in [-1, 1], squared and resized to ``size`` when given."""
  if not data:
    raise ImageDecodeError(path, 'empty file (0 bytes)')
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      img = ImageOps.exif_transpose(img)
      img = _to_rgb(img)
  except Image.DecompressionBombError as e:
    raise ImageDecodeError(path, f'refused as a decompression bomb ({e})') from None
  except Image.UnidentifiedImageError:
    raise ImageDecodeError(path, 'not an image Pillow can identify') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageDecodeError(path, f'cannot decode ({type(e).__name__}: {e})') from None
  if size is not None:
    img = resize(square(img, crop), size)
  return to_float(np.asarray(img))


def load_image(path, size: Optional[int] = None, crop: str = 'center') -> np.ndarray:
  """Reads an image file -> float32 (H, W, 3) in [-1, 1] (see the module policy)."""
  p = epath.Path(path)
  try:
    data = p.read_bytes()
  except (OSError, IsADirectoryError) as e:
    raise ImageDecodeError(path, f'cannot read ({type(e).__name__}: {e})') from None
  return decode(data, path, size, crop)


def to_float(img_uint8: np.ndarray) -> np.ndarray:
  return img_uint8.astype(np.float32) / 127.5 - 1.0


def to_uint8(img: np.ndarray) -> np.ndarray:
  """float in [-1, 1] -> uint8 (rounded, clipped)."""
  return np.clip(np.rint((np.asarray(img, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_image(path, img: np.ndarray) -> None:
  """Writes a float [-1, 1] HWC (or HW) image as PNG atomically (temporary name + rename)."""
  path = epath.Path(path)
  arr = to_uint8(img)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format='PNG')
  atomic_write_bytes(path, buf.getvalue())


def atomic_write_bytes(path, data: bytes) -> None:
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.tmp{os.getpid()}'
  tmp.write_bytes(data)
  tmp.rename(path)


def make_grid(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
  """(N, H, W, C) float images -> one (rows*(H+pad)-pad, ...) grid image, white padding."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  nrows = -(-n // ncols)
  grid = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), images.dtype)
  for i in range(n):
    r, col = divmod(i, ncols)
    grid[r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = images[i]
  return grid
