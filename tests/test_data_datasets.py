"""The training-side data API: normalisation, StoredDataset, StreamingDataset."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import lenszoo
from lenszoo.data import (
    NORMALIZATION,
    StoredDataset,
    StreamingDataset,
    normalize,
    normalizer_from_config,
    simulate_dataset,
)

N_PER_CLASS = 4


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    out = tmp_path_factory.mktemp("stored") / "B-train"
    simulate_dataset("B", "train", N_PER_CLASS, out, seed=3, shard_size=5, progress=False)
    return out


def test_normalize_scales_each_image_by_its_largest_absolute_pixel():
    images = np.stack([np.full((1, 4, 4), 2.0), np.zeros((1, 4, 4)), -np.arange(16.0).reshape(1, 4, 4)])
    out = normalize(images)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_array_equal(out[1], 0.0)  # an empty image stays empty instead of NaN
    assert out[2].min() == -1.0
    tensor = normalize(torch.from_numpy(images))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), out)
    assert normalizer_from_config(NORMALIZATION) is normalize
    assert normalizer_from_config(json_round_trip(NORMALIZATION)) is normalize
    with pytest.raises(lenszoo.LenszooError, match="unknown normalisation 'zscore'"):
        normalizer_from_config({"name": "zscore", "version": 1})
    with pytest.raises(lenszoo.LenszooError, match="version 9 is unknown"):
        normalizer_from_config({"name": NORMALIZATION["name"], "version": 9})
    with pytest.raises(lenszoo.LenszooError, match="shape"):
        normalize(np.zeros(5))


def json_round_trip(obj):
    import json

    return json.loads(json.dumps(obj))


def test_stored_classify_view(stored):
    dataset = StoredDataset(stored, "classify")
    assert len(dataset) == 12 and dataset.dataset_name == "B" and dataset.split == "train"
    assert dataset.class_names == lenszoo.CLASS_NAMES and dataset.manifest["seed"] == 3
    np.testing.assert_array_equal(dataset.targets, np.arange(12) % 3)
    image, target = dataset[7]
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert target.dtype == torch.long and int(target) == 1
    assert float(image.abs().max()) == pytest.approx(1.0)
    raw = lenszoo.get_dataset("B").simulate("train", 7, seed=3)[0]
    np.testing.assert_array_equal(image[0].numpy(), normalize(raw))
    unnormalized, _ = StoredDataset(stored, "classify", normalized=False)[7]
    np.testing.assert_array_equal(unnormalized[0].numpy(), raw)
    assert isinstance(dataset._shard_images(0), np.memmap)  # read from disk, not held in RAM
    with pytest.raises(IndexError):
        dataset[12]


def test_stored_regress_view_is_axion_only(stored):
    dataset = StoredDataset(stored, "regress")
    assert len(dataset) == 4
    assert (dataset.meta["label"] == 2).all()
    for i in range(len(dataset)):
        _, target = dataset[i]
        assert target.dtype == torch.float32 and target.shape == ()
        assert float(target) == pytest.approx(float(dataset.targets[i]))
        assert -24 <= float(target) <= -22


def test_stored_dataset_pickles_without_its_images(stored):
    dataset = StoredDataset(stored, "classify")
    dataset[0]
    dataset[11]
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 64 * 64 * 4  # no image data travels to DataLoader workers
    assert torch.equal(clone[5][0], dataset[5][0])


def test_stored_dataset_errors_say_what_to_do(tmp_path, stored):
    with pytest.raises(lenszoo.LenszooError, match="does not exist; make one with `lenszoo simulate`"):
        StoredDataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(lenszoo.LenszooError, match="not a lenszoo dataset"):
        StoredDataset(tmp_path / "plain")
    with pytest.raises(lenszoo.LenszooError, match="unknown task 'segment'"):
        StoredDataset(stored, "segment")


def test_stream_equals_the_stored_dataset(stored):
    stream = StreamingDataset("B", "train", "classify", epoch_size=12, seed=3)
    stored_items = StoredDataset(stored, "classify")
    assert len(stream) == 12
    for (image, target), i in zip(stream, range(12)):
        expected_image, expected_target = stored_items[i]
        assert torch.equal(image, expected_image) and torch.equal(target, expected_target)
    np.testing.assert_array_equal(stream.targets, stored_items.targets)
    image, target = stream.item(7)  # any position directly, e.g. to resume mid-epoch
    assert torch.equal(image, stored_items[7][0]) and int(target) == 1
    regress = StreamingDataset("B", "train", "regress", epoch_size=4, seed=3)
    stored_regress = StoredDataset(stored, "regress")
    for (image, target), i in zip(regress, range(4)):
        assert torch.equal(image, stored_regress[i][0]) and torch.equal(target, stored_regress[i][1])
    np.testing.assert_allclose(regress.targets, stored_regress.targets)


def _image_keys(batches):
    return [image.numpy().tobytes() for batch, _ in batches for image in batch]


def test_stream_workers_and_ranks_never_repeat_an_image():
    epoch_size = 12
    single = StreamingDataset("A", "train", "classify", epoch_size=epoch_size, noise=False)
    expected = {image.numpy().tobytes() for image, _ in single}
    assert len(expected) == epoch_size
    loader = DataLoader(StreamingDataset("A", "train", "classify", epoch_size=epoch_size, noise=False),
                        batch_size=3, num_workers=2)
    from_workers = _image_keys(loader)
    assert len(from_workers) == epoch_size and set(from_workers) == expected
    ranks = [StreamingDataset("A", "train", "classify", epoch_size=epoch_size, noise=False, rank=r, world_size=2)
             for r in range(2)]
    per_rank = [[image.numpy().tobytes() for image, _ in rank] for rank in ranks]
    assert [len(p) for p in per_rank] == [len(r) for r in ranks] == [6, 6]
    assert not set(per_rank[0]) & set(per_rank[1]) and set(per_rank[0]) | set(per_rank[1]) == expected


def test_stream_epochs_are_new_images_and_reproducible():
    stream = StreamingDataset("A", "val", "classify", epoch_size=6, noise=False)
    epoch0 = [image for image, _ in stream]
    stream.set_epoch(1)
    epoch1 = [image for image, _ in stream]
    assert not any(torch.equal(a, b) for a in epoch0 for b in epoch1)
    assert [int(t) for _, t in stream] == [0, 1, 2, 0, 1, 2]  # classes stay balanced
    stream.set_epoch(0)
    assert all(torch.equal(a, b) for a, (b, _) in zip(epoch0, stream))


def test_stream_bad_arguments():
    with pytest.raises(lenszoo.LenszooError, match="not divisible by world_size"):
        StreamingDataset("A", "train", epoch_size=10, world_size=3)
    with pytest.raises(lenszoo.LenszooError, match="rank must be in"):
        StreamingDataset("A", "train", epoch_size=10, rank=2, world_size=2)
    with pytest.raises(lenszoo.LenszooError, match="epoch_size must be a whole number > 0"):
        StreamingDataset("A", "train", epoch_size=0)
    with pytest.raises(lenszoo.LenszooError, match="unknown split"):
        StreamingDataset("A", "tran", epoch_size=3)
    with pytest.raises(lenszoo.LenszooError, match="unknown dataset"):
        StreamingDataset("Z", "train", epoch_size=3)
