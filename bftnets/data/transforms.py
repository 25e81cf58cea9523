"""albumentations pipelines for ImageFolder/ImageNet training and evaluation (numpy HWC RGB uint8 in, CHW float out)."""
from typing import Sequence, Tuple

import albumentations as A
from albumentations.pytorch import ToTensorV2

__all__ = ['train_transform', 'eval_transform']


def train_transform(resolution: int, mean: Sequence[float], std: Sequence[float],
                    scale: Tuple[float, float] = (0.08, 1.0), hflip: float = 0.5,
                    color_jitter: float = 0.0) -> A.Compose:
    """Inception-style RandomResizedCrop to ``resolution``, horizontal flip, optional colour jitter
    (brightness/contrast/saturation strength ``color_jitter``; 0 disables), Normalize, to tensor."""
    ops = [A.RandomResizedCrop(size=(resolution, resolution), scale=tuple(scale), ratio=(3 / 4, 4 / 3)),
           A.HorizontalFlip(p=hflip)]
    if color_jitter > 0:
        ops.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0.0))
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(ops)


def eval_transform(resolution: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 0.875) -> A.Compose:
    """Resize the short side to ``resolution / crop_pct``, centre crop ``resolution``, Normalize (timm's eval)."""
    return A.Compose([
        A.SmallestMaxSize(max_size=int(round(resolution / crop_pct))),
        A.CenterCrop(height=resolution, width=resolution),
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        ToTensorV2(),
    ])
