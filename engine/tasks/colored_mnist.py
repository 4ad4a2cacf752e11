"""Exercise 3: MNIST digits drawn in colour, with two labels per image: the digit and the colour.

Same image source and split as ``mnist`` (``sample5k`` or ``full``). Each image gets one of the first ``n_colors``
colours of a fixed 8-colour palette, drawn uniformly per image by ``data_seed``; the RGB image is the grey intensity
times the colour. Inputs float32 (N, 3, 28, 28) in [0, 1]; targets int64 (N, 2) = (digit, colour index);
heads = (10, n_colors).
"""
from __future__ import annotations

import numpy as np
import torch

from engine.tasks.common import DataKey, Split, TaskData, generator, sizes
from engine.tasks.mnist import data_source, images_and_splits  # noqa: F401  (the same image files as mnist)

# Eight colours whose RGB directions all differ, so the colour is recoverable from the channel ratios alone
# (whatever the stroke intensity). Order matters: n_colors takes a prefix, the first three being the primaries.
PALETTE = np.array([
    [1.0, 0.0, 0.0],  # red
    [0.0, 1.0, 0.0],  # green
    [0.0, 0.0, 1.0],  # blue
    [1.0, 1.0, 0.0],  # yellow
    [1.0, 0.0, 1.0],  # magenta
    [0.0, 1.0, 1.0],  # cyan
    [1.0, 0.5, 0.0],  # orange
    [1.0, 1.0, 1.0],  # white
], dtype=np.float32)
PALETTE_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")


def load(key: DataKey) -> TaskData:
    images, digits, split_idx, source = images_and_splits(key)
    # One colour per image of the whole source (not per split), so an image keeps its colour whatever the split.
    colours = generator(key.data_seed, 2).integers(key.n_colors, size=len(images))
    palette = torch.from_numpy(PALETTE[:key.n_colors])
    labels = np.stack([digits, colours], axis=1).astype(np.int64)

    def split(idx: np.ndarray) -> Split:
        grey = torch.from_numpy(images[idx].astype(np.float32)).div_(255.0)            # (n, 28, 28)
        rgb = grey[:, None] * palette[torch.from_numpy(colours[idx])][:, :, None, None]  # (n, 3, 28, 28)
        return Split(rgb.contiguous(), torch.from_numpy(labels[idx]))

    train, val, test = (split(idx) for idx in split_idx)
    return TaskData(train, val, test, input_shape=(3, 28, 28), heads=(10, key.n_colors), target_dim=0,
                    description=f"{source}, {key.n_colors} colours "
                                f"({', '.join(PALETTE_NAMES[:key.n_colors])}): {sizes(train, val, test)}")
