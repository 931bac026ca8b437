"""Specify how CIFAR images are found, decoded, cached, split and normalised."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resreport.data as data_module
from resreport.config import CifarConfig, ConfigError
from resreport.data import DataError, load_cifar

CLASS_RED = {"airplane": 0, "bird": 1, "cat": 2}  # red channel offset marks each class


def write_image_folder(root: Path, n_train: int = 20, n_test: int = 5, classes=("airplane", "bird", "cat"),
                       test_brightness: int = 0, seed: int = 0) -> Path:
    """Write a tiny ImageFolder tree of unique 32x32 PNGs (lossless, so pixel values survive exactly)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for class_name in classes:
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 100, size=(32, 32, 3), dtype=np.uint8)
                pixels[0, 0] = (CLASS_RED[class_name], 0, 0)  # class marker
                if split == "test":
                    pixels = pixels + test_brightness
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def tiny_config(**overrides) -> CifarConfig:
    return dataclasses.replace(CifarConfig(classes=("airplane", "bird")), **overrides)


def row_keys(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def test_split_is_disjoint_stratified_and_covers_the_training_images(tmp_path):
    data = load_cifar(tiny_config(), write_image_folder(tmp_path / "data"), tmp_path / "cache")
    assert row_keys(data.train_x).isdisjoint(row_keys(data.val_x))
    assert data.counts["train"] == {"airplane": 16, "bird": 16}
    assert data.counts["val"] == {"airplane": 4, "bird": 4}
    assert data.counts["test"] == {"airplane": 5, "bird": 5}
    assert len(row_keys(torch.cat([data.train_x, data.val_x]))) == 40


def test_same_split_seed_gives_the_same_split_and_another_seed_a_different_one(tmp_path):
    folder = write_image_folder(tmp_path / "data")
    first = load_cifar(tiny_config(split_seed=0), folder, tmp_path / "cache")
    again = load_cifar(tiny_config(split_seed=0), folder, tmp_path / "cache")
    other = load_cifar(tiny_config(split_seed=1), folder, tmp_path / "cache")
    assert torch.equal(first.val_x, again.val_x) and torch.equal(first.train_y, again.train_y)
    assert row_keys(first.val_x) != row_keys(other.val_x)


def test_normalisation_is_fitted_on_the_training_split_only(tmp_path):
    folder = write_image_folder(tmp_path / "data", test_brightness=150)
    data = load_cifar(tiny_config(), folder, tmp_path / "cache")
    per_channel = data.train_x.view(len(data.train_x), 3, -1).transpose(0, 1).reshape(3, -1)  # (C, pixels)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-5)
    assert data.test_x.mean() > 3  # test images are much brighter and were not used to fit
    assert data.val_x.view(len(data.val_x), 3, -1).mean(dim=(0, 2)).abs().max() > 1e-3  # val not fitted either


def test_classes_are_chosen_by_name_and_labelled_by_their_position(tmp_path):
    config = tiny_config(classes=("cat", "airplane"))
    data = load_cifar(config, write_image_folder(tmp_path / "data"), tmp_path / "cache")
    red_marker = data.train_x[:, 0] * data.std[0] + data.mean[0]  # pixel (0, 0), red, back in [0, 1]
    marker = torch.round(red_marker * 255)
    assert data.classes == ("cat", "airplane")
    assert set(marker[data.train_y == 0].tolist()) == {CLASS_RED["cat"]}
    assert set(marker[data.train_y == 1].tolist()) == {CLASS_RED["airplane"]}


def test_max_images_per_class_takes_a_stratified_subset_of_each_source(tmp_path):
    folder = write_image_folder(tmp_path / "data", n_train=30, n_test=15)
    data = load_cifar(tiny_config(max_images_per_class=10), folder, tmp_path / "cache")
    assert data.counts == {"train": {"airplane": 8, "bird": 8}, "val": {"airplane": 2, "bird": 2},
                           "test": {"airplane": 10, "bird": 10}}


def test_missing_folder_is_a_config_error_naming_the_path_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere.*--data"):
        load_cifar(tiny_config(), tmp_path / "nowhere", tmp_path / "cache")


def test_unknown_class_is_a_config_error_naming_the_class(tmp_path):
    folder = write_image_folder(tmp_path / "data")
    with pytest.raises(ConfigError, match="'ship' not found"):
        load_cifar(tiny_config(classes=("airplane", "ship")), folder, tmp_path / "cache")


def test_empty_class_folder_is_a_config_error_naming_the_folder(tmp_path):
    folder = write_image_folder(tmp_path / "data", classes=("airplane",))
    (folder / "train" / "bird").mkdir()
    (folder / "test" / "bird").mkdir()
    with pytest.raises(ConfigError, match=r"train/bird holds no images"):
        load_cifar(tiny_config(), folder, tmp_path / "cache")


def test_undecodable_image_is_a_data_error_naming_the_file(tmp_path):
    folder = write_image_folder(tmp_path / "data")
    (folder / "train" / "bird" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        load_cifar(tiny_config(), folder, tmp_path / "cache")


def test_truncated_jpeg_is_a_data_error_naming_the_file(tmp_path):
    folder = write_image_folder(tmp_path / "data")
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(tmp_path / "whole.jpg")
    content = (tmp_path / "whole.jpg").read_bytes()
    (folder / "test" / "airplane" / "cut.jpg").write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        load_cifar(tiny_config(), folder, tmp_path / "cache")


def test_second_load_reuses_the_cache_without_decoding(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "data")
    first = load_cifar(tiny_config(), folder, tmp_path / "cache")

    def refuse(paths):
        raise AssertionError("decoded again despite an up-to-date cache")

    monkeypatch.setattr(data_module, "decode_images", refuse)
    second = load_cifar(tiny_config(), folder, tmp_path / "cache")
    assert torch.equal(first.train_x, second.train_x) and first.fingerprint == second.fingerprint


def test_changing_a_file_invalidates_the_cache(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "data")
    first = load_cifar(tiny_config(), folder, tmp_path / "cache")
    Image.fromarray(np.full((32, 32, 3), 255, dtype=np.uint8)).save(folder / "test" / "bird" / "0000.png")
    decoded = []
    real_decode = data_module.decode_images
    monkeypatch.setattr(data_module, "decode_images", lambda paths: decoded.append(len(paths)) or real_decode(paths))
    second = load_cifar(tiny_config(), folder, tmp_path / "cache")
    assert decoded and second.fingerprint != first.fingerprint
    assert not torch.equal(first.test_x, second.test_x)


class FakeCIFAR10:
    """Stand in for torchvision.datasets.CIFAR10: .data (N, 32, 32, 3) uint8, .targets, .classes."""

    classes = ["airplane", "automobile", "bird", "cat"]

    def __init__(self, root, train=True, download=False, **kwargs):
        n_per_class = 20 if train else 5
        targets = np.repeat(np.arange(len(self.classes)), n_per_class)
        data = np.random.default_rng(int(train)).integers(0, 100, (len(targets), 32, 32, 3), dtype=np.uint8)
        data[:, 0, 0, 0] = targets  # class marker in the red channel of pixel (0, 0)
        self.data, self.targets = data, targets.tolist()


def test_torchvision_source_chooses_classes_by_name(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(data_module, "DEFAULT_TORCHVISION_ROOT", tmp_path / "tv")
    data = load_cifar(tiny_config(classes=("bird", "airplane")), None, tmp_path / "cache")
    marker = torch.round((data.train_x[:, 0] * data.std[0] + data.mean[0]) * 255)
    assert set(marker[data.train_y == 0].tolist()) == {FakeCIFAR10.classes.index("bird")}
    assert set(marker[data.train_y == 1].tolist()) == {FakeCIFAR10.classes.index("airplane")}
    assert data.counts["test"] == {"bird": 5, "airplane": 5} and "torchvision" in data.source


def test_torchvision_unknown_class_is_a_config_error_naming_it(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(data_module, "DEFAULT_TORCHVISION_ROOT", tmp_path / "tv")
    with pytest.raises(ConfigError, match="'ship'"):
        load_cifar(tiny_config(classes=("ship", "bird")), None, tmp_path / "cache")


def test_torchvision_offline_is_a_config_error_pointing_at_data(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.setattr(data_module, "DEFAULT_TORCHVISION_ROOT", tmp_path / "tv")
    with pytest.raises(ConfigError, match=r"tv.*could not be downloaded.*--data DIR"):
        load_cifar(tiny_config(), None, tmp_path / "cache")
