"""ImageFolder trees (``<root>/<split>/<class>/<image>``): ImageNet and any class-per-folder dataset.

Images are decoded with torchvision.io (libjpeg-turbo), which, unlike cv2.imread, rejects truncated JPEGs
instead of returning a half-grey picture; formats it cannot read fall back to cv2. Augmentation is
albumentations (:mod:`bftnets.data.transforms`). An unreadable image is skipped with a warning naming the
file; each batch carries the number skipped, which the LightningModule logs per epoch
(``train/skipped_images``). ``skip_corrupt=False`` makes the first bad file an error instead.
"""
import logging
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import lightning as L
import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import default_collate
from torchvision.io import ImageReadMode, decode_image, read_file

from bftnets.data.transforms import eval_transform, train_transform
from bftnets.training.errors import ConfigError

__all__ = ['ImageFolderDataModule', 'ImageFolderDataset', 'read_rgb', 'collate_skipping']

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff', '.gif')
TORCHVISION_DECODES = ('.jpg', '.jpeg', '.png', '.webp', '.gif')


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file to an HWC RGB uint8 array; raises on a corrupt or truncated file."""
    if path.lower().endswith(TORCHVISION_DECODES):
        return decode_image(read_file(path), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError('cv2 could not decode it')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def scan_split(split_dir: Path, classes: Optional[Sequence[str]] = None) -> Tuple[List[str], List[Tuple[str, int]]]:
    """Classes (sorted sub-directory names, or the given ones) and (path, class index) samples."""
    if not split_dir.is_dir():
        raise ConfigError(f'image folder split {split_dir} does not exist (expected <data.root>/<split>/<class>/*.jpg)')
    if classes is None:
        classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ConfigError(f'image folder split {split_dir} has no class sub-directories')
    samples = []
    for index, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue  # a class missing from this split: allowed (small validation sets)
        for dirpath, _, files in sorted(os.walk(class_dir, followlinks=True)):
            samples += [(os.path.join(dirpath, f), index) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not samples:
        raise ConfigError(f'image folder split {split_dir} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    return list(classes), samples


class ImageFolderDataset(Dataset):
    """(image tensor, label) per sample, or None when the file cannot be read and ``skip_corrupt`` is set."""

    def __init__(self, samples: List[Tuple[str, int]], transform: Callable, skip_corrupt: bool = True):
        self.samples, self.transform, self.skip_corrupt = samples, transform, skip_corrupt

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        try:
            image = read_rgb(path)
        except Exception as e:
            if not self.skip_corrupt:
                raise RuntimeError(f'unreadable image {path}: {e} (data.skip_corrupt=true skips such files)') from e
            log.warning('skipping unreadable image %s: %s', path, str(e).splitlines()[-1])
            return None
        return self.transform(image=image)['image'], label


def collate_skipping(batch):
    """Collate the readable samples; append how many were dropped as a third element."""
    good = [s for s in batch if s is not None]
    skipped = torch.tensor(len(batch) - len(good))
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, labels = default_collate(good)
    return images, labels, skipped


class ImageFolderDataModule(L.LightningDataModule):
    """Args:
        root: directory holding ``train_split`` and ``val_split`` sub-directories of class folders.
        resolution: training crop and evaluation crop size.
        batch_size: per-process batch size.
        num_classes: expected number of classes (checked against the tree); None: count the folders.
        mean, std: Normalize constants (default ImageNet's).
        crop_pct: evaluation centre crop fraction (timm: 0.875).
        scale, color_jitter, hflip: training augmentation (see :func:`train_transform`).
        train_subset, val_subset: use only every k-th image so that about N remain (class-balanced).
        skip_corrupt: skip unreadable images with a warning (True) or stop at the first one (False).
        num_workers, pin_memory: DataLoader options (workers are persistent).
    """

    in_chans = 3

    def __init__(self, root: str, resolution: int = 224, batch_size: int = 256, num_classes: Optional[int] = None,
                 train_split: str = 'train', val_split: str = 'val',
                 mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD,
                 crop_pct: float = 0.875, scale: Sequence[float] = (0.08, 1.0), color_jitter: float = 0.0,
                 hflip: float = 0.5, train_subset: Optional[int] = None, val_subset: Optional[int] = None,
                 skip_corrupt: bool = True, num_workers: int = 8, pin_memory: bool = True):
        super().__init__()
        if root is None or str(root) in ('', '???'):
            raise ConfigError('data.root is not set: pass data.root=<dir with train/ and val/ class folders>')
        if not isinstance(resolution, int) or resolution < 8:
            raise ConfigError(f'data.resolution must be an int >= 8, got {resolution!r}')
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f'data.batch_size must be a positive int, got {batch_size!r}')
        if not 0 < crop_pct <= 1:
            raise ConfigError(f'data.crop_pct must be in (0, 1], got {crop_pct}')
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f'data.root={root} does not exist')
        self.resolution, self.batch_size = resolution, batch_size
        self.train_split, self.val_split = train_split, val_split
        self.mean, self.std, self.crop_pct = tuple(mean), tuple(std), crop_pct
        self.scale, self.color_jitter, self.hflip = tuple(scale), color_jitter, hflip
        self.train_subset, self.val_subset = train_subset, val_subset
        self.skip_corrupt, self.num_workers, self.pin_memory = skip_corrupt, num_workers, pin_memory
        # classes come from the training split, so that labels agree between splits
        self.classes, self._train_samples = scan_split(self.root / train_split)
        if num_classes is not None and num_classes != len(self.classes):
            raise ConfigError(f'{self.root / train_split} has {len(self.classes)} class folders, '
                              f'data.num_classes says {num_classes}')
        self.num_classes = len(self.classes)
        _, self._val_samples = scan_split(self.root / val_split, self.classes)
        self.train_set = self.val_set = None

    @staticmethod
    def _subset(samples, limit):
        if limit is None or limit >= len(samples):
            return samples
        step = len(samples) / limit  # samples are sorted by class: even striding keeps the class balance
        return [samples[int(i * step)] for i in range(limit)]

    def setup(self, stage: Optional[str] = None):
        evaluation = eval_transform(self.resolution, self.mean, self.std, self.crop_pct)
        self.val_set = ImageFolderDataset(self._subset(self._val_samples, self.val_subset), evaluation,
                                          self.skip_corrupt)
        training = train_transform(self.resolution, self.mean, self.std, self.scale, self.hflip, self.color_jitter)
        self.train_set = ImageFolderDataset(self._subset(self._train_samples, self.train_subset), training,
                                            self.skip_corrupt)

    def _loader(self, dataset, batch_size, shuffle):
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle and len(dataset) > batch_size,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, collate_fn=collate_skipping)

    def train_dataloader(self):
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, self.batch_size, shuffle=False)

    test_dataloader = val_dataloader
