"""The DINO-like encoders' augmentations and multi-crop loss (cafe_core/world/pretrain.py)."""

import torch

from cafe_core.world.pretrain import local_to_global, random_views


def _centre_square(batch: int = 64) -> torch.Tensor:
    """White 8x8 square in the middle of a black 16x16 image: (batch, 3, 16, 16)."""
    x = torch.zeros(batch, 3, 16, 16)
    x[:, :, 4:12, 4:12] = 1.0
    return x


def test_local_views_have_their_own_size_and_a_small_spread_stays_on_the_centre():
    x, gen = _centre_square(), torch.Generator().manual_seed(0)
    centred = random_views(x, gen, scale=(0.15, 0.15), size=8, spread=0.0)
    anywhere = random_views(x, gen, scale=(0.15, 0.15), size=8, spread=1.0)
    assert centred.shape == (64, 3, 8, 8) and random_views(x, gen).shape == x.shape
    assert centred.mean(dim=(1, 2, 3)).min() > 0.9  # every centred crop sees the subject only
    assert anywhere.mean(dim=(1, 2, 3)).min() < 0.5  # crops from anywhere also land on the background


def test_local_to_global_rewards_crops_that_agree_with_their_own_image():
    torch.manual_seed(0)
    views = (torch.randn(8, 16), torch.randn(8, 16))
    own = torch.cat([views[0] + 0.1 * torch.randn(8, 16) for _ in range(3)])  # crop k of image i at k*8 + i
    shuffled = torch.cat([views[0][torch.randperm(8)] for _ in range(3)])
    assert local_to_global(own, views, 0.2) < local_to_global(shuffled, views, 0.2)
