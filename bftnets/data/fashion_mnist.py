"""Fashion-MNIST (Xiao et al. 2017), the embedded default dataset: 60k/10k 28x28 grey images, 10 classes.

The whole dataset lives in memory as uint8 (47 MB); resizing, normalising and flipping run as torch ops on
each batch after it reaches the device (``on_after_batch_transfer``), which is far cheaper than a per-image
pipeline for images this small. The official test split is the validation set.
"""
import gzip
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

from bftnets.training.errors import ConfigError

__all__ = ['FashionMNISTDataModule', 'read_idx', 'find_fashion_mnist', 'DEBIAN_DIR']

log = logging.getLogger(__name__)

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'  # Debian/Ubuntu package dataset-fashion-mnist
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
MEAN, STD = (0.2860,), (0.3530,)  # of the 60k training images, pixel values in [0, 1]
FILES = {split: (f'{split}-images-idx3-ubyte', f'{split}-labels-idx1-ubyte') for split in ('train', 't10k')}
IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; ``.gz`` or plain) into a numpy array."""
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError(f'{path} is not an unsigned-byte IDX file (bad magic number)')
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f'{path} is truncated: header says {shape}, found {len(data) - offset} bytes of data')
    return np.frombuffer(data, dtype=IDX_DTYPES[data[2]], offset=offset).reshape(shape)


def _find_file(directory: Path, name: str) -> Optional[Path]:
    for candidate in (directory / f'{name}.gz', directory / name):
        if candidate.is_file():
            return candidate
    return None


def find_fashion_mnist(root: Optional[str] = None) -> Optional[Path]:
    """The first directory holding all four IDX files: ``root``, its torchvision layout, then the Debian path."""
    dirs = []
    if root:
        dirs += [Path(root), Path(root) / 'FashionMNIST' / 'raw']
    dirs.append(Path(DEBIAN_DIR))
    for d in dirs:
        if all(_find_file(d, name) for names in FILES.values() for name in names):
            return d
    return None


class FashionMNISTDataModule(L.LightningDataModule):
    """Args:
        root: directory with the IDX files (or where torchvision may download them); None: the Debian path.
        resolution: side of the square input the network sees (bilinear resize from 28).
        batch_size: per-process batch size.
        train_subset: use only the first N training images (class-balanced: the files are shuffled).
        val_subset: use only the first N test images.
        hflip: random horizontal flips in training.
        num_workers: DataLoader workers; 0 is fastest for an in-memory dataset.
    """

    num_classes = len(CLASSES)
    in_chans = 1
    mean, std = MEAN, STD

    def __init__(self, root: Optional[str] = None, resolution: int = 32, batch_size: int = 256,
                 train_subset: Optional[int] = None, val_subset: Optional[int] = None, hflip: bool = True,
                 num_workers: int = 0, download: bool = True):
        super().__init__()
        if not isinstance(resolution, int) or resolution < 8:
            raise ConfigError(f'data.resolution must be an int >= 8, got {resolution!r}')
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f'data.batch_size must be a positive int, got {batch_size!r}')
        for name, value in (('train_subset', train_subset), ('val_subset', val_subset)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f'data.{name} must be a positive int or null, got {value!r}')
        self.root, self.resolution, self.batch_size = root, resolution, batch_size
        self.train_subset, self.val_subset, self.hflip = train_subset, val_subset, hflip
        self.num_workers, self.download = num_workers, download
        self.train_set = self.val_set = None

    def prepare_data(self):
        if find_fashion_mnist(self.root) is not None:
            return
        download_root = self.root or os.path.join('data', 'fashion-mnist')
        hint = (f'Fashion-MNIST not found in {self.root or "data.root"} or {DEBIAN_DIR}. Install it with '
                f'`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four IDX files '
                f'{sorted(n for names in FILES.values() for n in names)} (.gz or plain) in a directory and pass '
                f'data.root=<dir>, or run once with internet access to download them.')
        if not self.download:
            raise ConfigError(hint)
        try:
            from torchvision.datasets import FashionMNIST
            for train in (True, False):
                FashionMNIST(download_root, train=train, download=True)
        except Exception as e:  # offline, or a mirror failing
            raise ConfigError(f'{hint} (download to {download_root} failed: {e})') from e
        self.root = download_root

    def _load(self, split: str, limit: Optional[int]) -> TensorDataset:
        directory = find_fashion_mnist(self.root)
        if directory is None:
            self.prepare_data()
            directory = find_fashion_mnist(self.root)
        images_name, labels_name = FILES[split]
        images = read_idx(_find_file(directory, images_name))
        labels = read_idx(_find_file(directory, labels_name))
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(f'{directory}: {split} images {images.shape} and labels {labels.shape} do not match')
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return TensorDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))

    def setup(self, stage: Optional[str] = None):
        if self.val_set is None:
            self.val_set = self._load('t10k', self.val_subset)
        if stage in (None, 'fit') and self.train_set is None:
            self.train_set = self._load('train', self.train_subset)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          drop_last=len(self.train_set) > self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size * 2, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    test_dataloader = val_dataloader

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = batch
        x = self.normalize(images)
        if self.hflip and self.trainer is not None and self.trainer.training:
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, labels

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1, 28, 28) -> normalised float (N, 1, resolution, resolution)."""
        x = images.float().div_(255)
        if self.resolution != x.shape[-1]:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode='bilinear', align_corners=False,
                              antialias=self.resolution < x.shape[-1])
        return x.sub_(MEAN[0]).div_(STD[0])
