"""The decoded-data cache gives the per-image loader's batches exactly, and says why when it cannot be used."""

import numpy as np
import pytest
import torch
from conftest import FAST, random_rgb, write_image
from PIL import Image

from imgtrans.config import TrainConfig
from imgtrans.data.cache import CachedLoader, training_loader
from imgtrans.data.datasets import EpochSampler, build_data
from imgtrans.errors import ImgtransError

CPU = torch.device("cpu")


def loaders(root, cache: str, unpaired: bool = False, **options):
    cfg = TrainConfig(dataset=str(root), crop_size=48, **options)
    train = build_data(cfg, unpaired=unpaired).train
    sampler = EpochSampler(len(train), seed=3)
    return sampler, training_loader(train, choice=cache, sampler=sampler, batch_size=2, device=CPU, workers=0,
                                    seed=3)


def epochs_of_batches(sampler, loader, epochs=2):
    batches = []
    for epoch in range(epochs):
        sampler.set_position(epoch, 2 if epoch else 0)  # also from the middle of an epoch, as a resumed run does
        batches += list(loader)
    return batches


@pytest.fixture
def unpaired(tmp_path):
    """5 A images of 64 px and 3 B images of another size (each side of one size, as the cache needs)."""
    for i in range(5):
        write_image(tmp_path / "trainA" / f"{i}.png", random_rgb(64, 64, i))
    for i in range(3):
        write_image(tmp_path / "trainB" / f"{i}.png", random_rgb(72, 80, 10 + i))
    return tmp_path


@pytest.mark.parametrize("dataset, options", [
    ("facades", {"preprocess": "resize_and_crop", "flip": True}),
    ("facades", {"preprocess": "scale_width_and_crop", "direction": "BtoA"}),
    ("aerial", {"color_space": "lab", "preprocess": "resize_and_crop"}),
    ("aerial", {"color_space": "lab", "preprocess": "random_scale_and_crop"}),  # each image at its own size
    ("unpaired", {"unpaired": True}),  # each A with the B drawn for it, each side resized by its own size
])
def test_cached_batches_are_the_per_image_batches(request, dataset, options):
    root = request.getfixturevalue(dataset)
    (s1, (per_image, off)), (s2, (cached, where)) = loaders(root, "off", **options), loaders(root, "host", **options)
    assert off.startswith("off") and where.startswith("host") and isinstance(cached, CachedLoader)
    expected, got = epochs_of_batches(s1, per_image), epochs_of_batches(s2, cached)
    assert len(expected) == len(got) > 2
    for a, b in zip(expected, got):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["A"], b["A"]) and torch.equal(a["B"], b["B"])


def test_16bit_images_keep_the_per_image_loader(tmp_path):
    for split in ("train", "val"):
        for i in range(2):
            for side in ("A", "B"):
                path = tmp_path / split / side / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((64, 64), 1000 + i, np.uint16)).save(path)
    _, (loader, where) = loaders(tmp_path, "auto")
    assert not isinstance(loader, CachedLoader) and "not 8-bit" in where
    with pytest.raises(ImgtransError, match="data_cache=host: the training images are not 8-bit"):
        loaders(tmp_path, "host")


def test_a_damaged_image_is_refused_before_training_not_cached_around(tmp_path):
    for i in range(6):
        write_image(tmp_path / "train" / f"{i}.png", random_rgb(64, 128, i))  # aligned pairs
    damaged = tmp_path / "train" / "3.png"
    damaged.write_bytes(damaged.read_bytes()[:300])  # its header reads, its pixels do not
    for cache in ("auto", "host"):
        with pytest.raises(ImgtransError, match="cannot read image .*3.png: .*truncated; fix or remove the file"):
            loaders(tmp_path, cache)


def test_device_cache_needs_a_gpu(facades):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ImgtransError, match="data_cache=device needs a CUDA device"):
        loaders(facades, "device")


def test_a_run_with_the_cache_trains_as_one_without(facades):
    import mlflow

    from imgtrans.cli import main

    for cache in ("off", "host"):
        assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "3", "--data-cache", cache]) == 0
    off, host = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   order_by=["attributes.start_time ASC"])
    assert off.data.params["data_cache"].startswith("off")
    assert host.data.params["data_cache"].startswith("host")
    for key in ("train/G_GAN", "train/G_L1", "train/D_real", "train/D_fake"):
        assert off.data.metrics[key] == host.data.metrics[key], key
