"""VGG16 feature extractor vs an independent PyTorch re-implementation with the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.io import images as imageio
from pmsfc_jax.io import pretrained
from pmsfc_jax.models import vgg
from tests import torch_util


def _torch_vgg_features(params, x01, layer):
  """torchvision vgg16().features up to ``layer`` written with torch.nn.functional, float64, NCHW."""
  torch = torch_util.require()
  F = torch.nn.functional
  mean = torch.tensor(vgg.IMAGENET_MEAN, dtype=torch.float64)[:, None, None]
  std = torch.tensor(vgg.IMAGENET_STD, dtype=torch.float64)[:, None, None]
  h = (torch.from_numpy(np.asarray(x01, np.float64)).permute(0, 3, 1, 2) - mean) / std
  seq = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512]
  target = vgg.RELU_LAYERS.index(layer)
  i = 0
  for v in seq:
    if v == 'M':
      h = F.max_pool2d(h, kernel_size=2, stride=2)
      continue
    w = torch.from_numpy(np.asarray(params[f'Conv_{i}']['kernel'], np.float64)).permute(3, 2, 0, 1)
    b = torch.from_numpy(np.asarray(params[f'Conv_{i}']['bias'], np.float64))
    h = F.relu(F.conv2d(h, w, b, padding=1))
    if i == target:
      return h.permute(0, 2, 3, 1).numpy()
    i += 1


@pytest.fixture(scope='module')
def face(public_images):
  return imageio.load_image(public_images['astronaut'], size=36)[None]


@pytest.mark.parametrize('layer', ['relu1_2', 'relu3_3', 'relu5_3'])
def test_features_match_torch(face, layer):
  params = pretrained.load_vgg16_params(layer)
  ours = np.asarray(jax.jit(vgg.features, static_argnums=(2,))(params, face, layer))
  ref = _torch_vgg_features(params, (np.asarray(face) + 1) / 2, layer)
  assert ours.shape == ref.shape == (1,) + vgg.feature_shape(layer, 36, 36)
  assert np.abs(ref).max() > 10.0  # real activations, not an all-zero output
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_params_up_to_layer_only():
  assert sorted(pretrained.load_vgg16_params('relu3_3')) == [f'Conv_{i}' for i in range(7)]
  assert len(pretrained.load_vgg16_params('relu5_3')) == 13


def test_unknown_layer():
  with pytest.raises(ValueError, match="unknown VGG16 layer 'relu6_1'"):
    vgg.check_layer('relu6_1')


@pytest.mark.parametrize('size_in,size_out', [(8, 20), (20, 8), (16, 16), (12, 12)])
def test_resize_nearest_matches_torch(size_in, size_out):
  x = np.random.default_rng(0).normal(size=(2, size_in, size_in, 3)).astype(np.float32)
  ours = np.asarray(vgg.resize_nearest(jnp.asarray(x), size_out))
  torch = torch_util.require()
  ref = torch.nn.functional.interpolate(
    torch.from_numpy(x).permute(0, 3, 1, 2), size=size_out, mode='nearest'
  )
  np.testing.assert_array_equal(ours, ref.permute(0, 2, 3, 1).numpy())
