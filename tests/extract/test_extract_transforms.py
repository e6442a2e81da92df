import numpy as np
import torch

from wsi_pipeline.extract.dataset import collate_tiles
from wsi_pipeline.extract.transforms import IMAGENET_MEAN, IMAGENET_STD, TileTransform


def test_normalises_like_the_textbook_formula_into_channels_last() -> None:
    tiles = np.random.default_rng(0).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    batch, _, _ = collate_tiles([(tile, i, "") for i, tile in enumerate(tiles)])
    images = TileTransform(224, IMAGENET_MEAN, IMAGENET_STD).normalize(batch)
    expected = (tiles / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(images.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-5)
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)


def test_resizes_only_when_the_model_input_differs() -> None:
    transform = TileTransform(224, IMAGENET_MEAN, IMAGENET_STD)
    same = np.zeros((224, 224, 3), dtype=np.uint8)
    same.flags.writeable = False
    prepared = transform.prepare(same)
    assert prepared.shape == (224, 224, 3) and prepared.flags.writeable
    assert transform.prepare(np.zeros((256, 256, 3), dtype=np.uint8)).shape == (224, 224, 3)
    assert transform(np.full((256, 256, 3), 255, dtype=np.uint8)).shape == (3, 224, 224)
