"""The ImageNet/ImageFolder path on a small tree of real photos (skimage, sklearn), one of them truncated."""
import json
import logging

import numpy as np
import pytest
import torch
from skimage import data as photos
from sklearn.datasets import load_sample_images
from torchvision.io import encode_jpeg

from bftnets.data import ImageFolderDataModule
from bftnets.data.image_folder import read_rgb
from bftnets.training import ConfigError
from conftest import TINY

PHOTOS = {'animal': ['chelsea', 'cat', 'astronaut', 'coffee'], 'thing': ['rocket', 'camera', 'coins', 'moon']}


def _jpeg(image: np.ndarray) -> bytes:
    if image.ndim == 2:  # grey photos: the loader must still give RGB
        image = np.repeat(image[:, :, None], 3, axis=2)
    return encode_jpeg(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), quality=90).numpy().tobytes()


@pytest.fixture
def tree(tmp_path):
    """train/<class>/ 4 photos + 2 flips each (12 per class), val/<class>/ 2 photos, one truncated JPEG in train."""
    root = tmp_path / 'tree'
    china, flower = load_sample_images().images
    for index, (label, names) in enumerate(PHOTOS.items()):
        images = [getattr(photos, n)() for n in names] + [china if index == 0 else flower]
        for split, chosen in (('train', images[:4]), ('val', images[3:])):
            (root / split / label).mkdir(parents=True)
            for i, image in enumerate(chosen):
                variants = [image, image[:, ::-1], image[::-1]] if split == 'train' else [image]
                for j, variant in enumerate(variants):
                    (root / split / label / f'{i}_{j}.jpg').write_bytes(_jpeg(variant))
    whole = _jpeg(photos.astronaut())
    bad = root / 'train' / 'animal' / 'truncated.jpg'
    bad.write_bytes(whole[:len(whole) // 3])
    return root, bad


def test_reader_rejects_truncated_jpeg(tree):
    root, bad = tree
    assert read_rgb(str(root / 'train' / 'thing' / '1_0.jpg')).shape == (512, 512, 3)  # grey camera -> RGB
    with pytest.raises(RuntimeError, match='truncated'):
        read_rgb(str(bad))


def test_pipelines_shapes_and_normalisation(tree):
    root, _ = tree
    dm = ImageFolderDataModule(root=str(root), resolution=64, batch_size=4, num_workers=0, pin_memory=False)
    assert dm.classes == ['animal', 'thing'] and dm.num_classes == 2
    assert len(dm._train_samples) == 25 and len(dm._val_samples) == 4
    dm.setup('fit')
    image, label = dm.val_set[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and label == 0
    assert -2.2 < float(image.min()) < float(image.max()) < 2.7  # ImageNet mean/std normalised
    train_image, _ = dm.train_set[1]
    assert train_image.shape == (3, 64, 64)


def test_trains_one_step_and_reports_the_bad_file(make_cfg, tmp_path, tree, caplog):
    from train import train
    root, bad = tree
    cfg = make_cfg(TINY + ['model=mobilenetv3_bft', 'data=image_folder', f'data.root={root}', 'data.resolution=64',
                           'data.batch_size=25', 'data.num_workers=0', 'data.pin_memory=false'])
    with caplog.at_level(logging.WARNING, logger='bftnets.data.image_folder'):
        report = train(cfg)
    assert report['global_step'] == 1 and report['status'] == 'finished'
    assert report['skipped_images'] == 1 and report['history'][0]['train/skipped_images'] == 1
    assert any(str(bad) in r.getMessage() and 'truncated' in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / 'metrics.json').read_text())['skipped_images'] == 1


def test_fail_fast_on_a_bad_file(tree):
    root, bad = tree
    dm = ImageFolderDataModule(root=str(root), resolution=32, num_workers=0, skip_corrupt=False)
    dm.setup('fit')
    index = [p for p, _ in dm.train_set.samples].index(str(bad))
    with pytest.raises(RuntimeError, match=f'unreadable image {bad}'):
        dm.train_set[index]


def test_missing_or_empty_split_is_a_clear_error(tree, tmp_path):
    root, _ = tree
    with pytest.raises(ConfigError, match='split .*val2 does not exist'):
        ImageFolderDataModule(root=str(root), val_split='val2')
    (root / 'empty' / 'animal').mkdir(parents=True)
    with pytest.raises(ConfigError, match='holds no images'):
        ImageFolderDataModule(root=str(root), val_split='empty')
    with pytest.raises(ConfigError, match='has 2 class folders, data.num_classes says 1000'):
        ImageFolderDataModule(root=str(root), num_classes=1000)
