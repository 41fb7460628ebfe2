"""Data layer: image datasets (three folder layouts), CIFAR-10-C files, crash-safe writes."""

from deeprepair.data.cifar_c import (
    list_corruptions,
    load_manifest,
    read_corruption,
    read_labels,
    write_corruption,
    write_labels,
)
from deeprepair.data.datasets import (
    ImageSet,
    download_cifar10,
    load_dataset,
    load_failure_set,
    load_unlabelled,
    resolve_data_dir,
)
from deeprepair.data.io import atomic_open, atomic_save_npy, atomic_write_bytes, sha256_file

__all__ = [
    "ImageSet",
    "atomic_open",
    "atomic_save_npy",
    "atomic_write_bytes",
    "download_cifar10",
    "list_corruptions",
    "load_dataset",
    "load_failure_set",
    "load_unlabelled",
    "load_manifest",
    "read_corruption",
    "read_labels",
    "resolve_data_dir",
    "sha256_file",
    "write_corruption",
    "write_labels",
]
