"""Whether a dataset's or a camera's frames may be resized to a model's input: plain Python, no
numpy or torch (the on-robot runtime uses it too)."""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import FrameSizeError

# Relative difference of aspect ratio (W/H) below which a resize is not called a distortion (rounding of
# odd sizes: 480x640 -> 48x64 is exact, 720x1280 -> 64x114 is 0.2% off).
ASPECT_TOLERANCE = 0.02


def aspect_change(native: Sequence[int], target: Sequence[int]) -> float:
    """Relative change of the aspect ratio (W/H) when (H, W) frames are resized to (H, W) ``target``."""
    return abs((int(native[1]) / int(native[0])) / (int(target[1]) / int(target[0])) - 1.0)


def check_frame_size(native: Sequence[int], target: Sequence[int], *, data: str, model: str,
                     allow_squash: bool = False) -> Optional[str]:
    """Whether a dataset's (H, W) frames may be resized to a model's (H, W) input.

    Returns None when the sizes agree and a one-line note when the frames are scaled with their aspect
    ratio kept; raises FrameSizeError naming both sizes and the ways out when the resize would change the
    aspect ratio (a model trained on squashed frames sees a different world than its camera), unless
    ``allow_squash``."""
    (nh, nw), (th, tw) = (int(native[0]), int(native[1])), (int(target[0]), int(target[1]))
    if (nh, nw) == (th, tw):
        return None
    change = aspect_change(native, target)
    if change <= ASPECT_TOLERANCE or allow_squash:
        how = "scaled" if change <= ASPECT_TOLERANCE else "squashed (--allow-squash)"
        return f"{data}: {nh}x{nw} frames are {how} to {model}'s {th}x{tw}"
    raise FrameSizeError(
        f"{data}: frames are {nh}x{nw} (H x W, aspect {nw / nh:.2f}) but {model} expects {th}x{tw} (aspect "
        f"{tw / th:.2f}): resizing would distort them. Bring the data to that aspect ratio first (video: "
        f"`lapa data import-videos --image-size {th} {tw} --resize-mode crop` or `pad`), use a model whose "
        f"input has the data's aspect ratio, or pass --allow-squash to accept the distortion")
