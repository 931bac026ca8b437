"""Write tiny CIFAR-like image folders (ImageFolder layout) for tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root: Path, classes=("airplane", "bird"), n_train: int = 30, n_test: int = 10,
                      seed: int = 0) -> Path:
    """Write root/{train,test}/<class>/NNNN.png, each class with its own mean colour so it can be learned."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for index, name in enumerate(classes):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = 60 + 120 * (index % 2)
                pixels = np.clip(rng.normal(base, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return Path(root)
