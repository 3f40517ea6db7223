"""The frozen encoders' feature cache (cafe_core.data.features): computed once, memory-mapped, resumable."""

import numpy as np
import pytest
import torch

from cafe_core.data.features import cached_features


class Stream:
    """An ImageSource of n random images, streamed like a dataset's ImageRows."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.images = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int):
        for i in range(0, len(self.images), batch_size):
            yield self.images[i : i + batch_size]

    def digest(self) -> str:
        return f"stream-{self.seed}-{len(self)}"


class Encoder:
    """Mean colour and a (2, 3) token map per image; counts the images it sees; may die at a batch."""

    def __init__(self, die_at: int | None = None) -> None:
        self.seen, self.calls, self.die_at = 0, 0, die_at

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt  # the run is killed while encoding
        self.seen += len(batch)
        x = torch.from_numpy(batch).float()
        return torch.stack([x.mean((1, 2)), x[:, 0, 0]], dim=1)


def test_features_are_computed_once_and_read_back_memory_mapped(tmp_path):
    stream = Stream(10)
    first = Encoder()
    features = cached_features("toy", stream, first, key_parts=("enc",), cache_dir=tmp_path, batch_size=4)
    expected = Encoder()(stream.images)
    torch.testing.assert_close(features, expected)
    again = Encoder()
    torch.testing.assert_close(cached_features("toy", stream, again, key_parts=("enc",), cache_dir=tmp_path), expected)
    assert first.seen == 10 and again.seen == 0
    (cache,) = tmp_path.glob("features-toy-*.npy")
    features[:] = 0  # copy on write: a caller changing its rows never changes the cache
    np.testing.assert_array_equal(np.load(cache), expected.numpy())
    other = Encoder()  # another encoder identity, or other images, is another cache
    cached_features("toy", stream, other, key_parts=("other",), cache_dir=tmp_path)
    cached_features("toy", Stream(10, seed=1), other, key_parts=("enc",), cache_dir=tmp_path)
    assert other.seen == 20
    in_memory = cached_features("toy", stream.images, Encoder(), key_parts=("enc",), cache_dir=None)
    torch.testing.assert_close(in_memory, expected)


def test_a_run_killed_while_encoding_resumes_at_the_rows_it_had_not_written(tmp_path):
    stream = Stream(10)
    with pytest.raises(KeyboardInterrupt):
        cached_features("toy", stream, Encoder(die_at=3), key_parts=("enc",), cache_dir=tmp_path, batch_size=4)
    assert not list(tmp_path.glob("features-toy-*[0-9a-f].npy"))  # no finished cache yet, only the partial one
    resumed = Encoder()
    features = cached_features("toy", stream, resumed, key_parts=("enc",), cache_dir=tmp_path, batch_size=4)
    assert resumed.seen == 2  # the two batches of 4 written before the kill are kept
    torch.testing.assert_close(features, Encoder()(stream.images))
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock", ".npy"]  # partial and progress files gone


def test_half_precision_caches_halve_the_disk_and_keep_the_values(tmp_path):
    stream = Stream(6)
    expected = Encoder()(stream.images)
    for dtype in (torch.float16, torch.bfloat16):
        features = cached_features(
            "toy", stream, Encoder(), key_parts=("enc",), cache_dir=tmp_path / str(dtype), dtype=dtype
        )
        assert features.dtype == dtype
        torch.testing.assert_close(features.float(), expected.to(dtype).float())
        (cache,) = (tmp_path / str(dtype)).glob("*.npy")
        assert np.load(cache, mmap_mode="r").itemsize == 2
    with pytest.raises(ValueError, match="no images"):
        cached_features("toy", Stream(0), Encoder(), key_parts=("enc",), cache_dir=tmp_path)


def test_processes_wanting_one_cache_fill_it_once(tmp_path):
    """The processes of a multi-process stage (or two stages sharing an encoder) ask for the same
    cache at once: one fills it, the others wait and read it, and nobody reads half a file."""
    import threading

    stream, encoders, results = Stream(12), [], []
    barrier = threading.Barrier(3)

    def want() -> None:
        encoder = Encoder()
        encoders.append(encoder)
        barrier.wait()
        results.append(cached_features("toy", stream, encoder, key_parts=("enc",), cache_dir=tmp_path, batch_size=4))

    threads = [threading.Thread(target=want) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e.seen for e in encoders) == [0, 0, 12]
    for features in results:
        torch.testing.assert_close(features, Encoder()(stream.images))
