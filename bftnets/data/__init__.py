"""LightningDataModules: the embedded Fashion-MNIST default and ImageFolder trees (ImageNet) with albumentations."""
from bftnets.data.fashion_mnist import FashionMNISTDataModule
from bftnets.data.image_folder import ImageFolderDataModule

__all__ = ['FashionMNISTDataModule', 'ImageFolderDataModule']
