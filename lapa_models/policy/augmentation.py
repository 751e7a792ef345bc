"""Image augmentation for training, in plain torch (no torchvision), on a whole batch at once.

Random resized crop + shift (one affine warp per image) and colour jitter (brightness, contrast,
saturation), on float (B, 3, S, S) images in [0, 1] that are already at the model's size, so the resize
before it is exactly the one the exported graph does.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass
class ImageAugmentation:
    crop_scale: Tuple[float, float] = (0.85, 1.0)   # fraction of the image area kept by the crop
    max_shift: float = 0.04                         # extra translation, fraction of the image side
    brightness: float = 0.2                         # factors drawn from [1 - x, 1 + x]
    contrast: float = 0.2
    saturation: float = 0.2

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"augmentation expects float (B, 3, H, W), got {tuple(images.shape)}")
        b = images.shape[0]
        dev = images.device

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, *shape, device=dev, generator=generator)

        if self.crop_scale == (1.0, 1.0) and self.max_shift == 0.0:
            x = images
        else:
            x = self._warp(images, uniform)
        return self._jitter(x, uniform)

    def _warp(self, images: torch.Tensor, uniform) -> torch.Tensor:
        b = images.shape[0]
        dev = images.device
        side = uniform(*self.crop_scale).sqrt()                       # crop side as a fraction of the image
        slack = (1.0 - side).unsqueeze(1)                              # how far the crop centre may move
        centre = (uniform(-1.0, 1.0, 2) * slack + uniform(-1.0, 1.0, 2) * 2 * self.max_shift)
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0] = side
        theta[:, 1, 1] = side
        theta[:, :, 2] = centre
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor, uniform) -> torch.Tensor:
        b = x.shape[0]
        dev = x.device
        luma = torch.tensor(_LUMA, device=dev).view(1, 3, 1, 1)
        x = x * uniform(1 - self.brightness, 1 + self.brightness).view(b, 1, 1, 1)
        grey_mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (x - grey_mean) * uniform(1 - self.contrast, 1 + self.contrast).view(b, 1, 1, 1) + grey_mean
        grey = (x * luma).sum(1, keepdim=True)
        x = (x - grey) * uniform(1 - self.saturation, 1 + self.saturation).view(b, 1, 1, 1) + grey
        return x.clamp(0.0, 1.0)
