"""Teachers behind one interface (cafe_core.data.teachers): the IP-Adapter teacher on a tiny SD
pipeline and IP-Adapter written in their real on-disk layouts."""

import numpy as np
import pytest

from cafe_core.data.teachers import IPAdapterTeacher, Teacher, TeacherRequest

pytestmark = pytest.mark.slow  # a diffusers pipeline with an IP-Adapter, written, loaded and run


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    from cafe_core.testing import write_tiny_ip_adapter, write_tiny_sd_pipeline

    root = tmp_path_factory.mktemp("teacher")
    base = write_tiny_sd_pipeline(root / "sd15")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    return base, write_tiny_ip_adapter(root / "ip-adapter", unet)


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)


def test_the_ip_adapter_teacher_draws_the_photo_as_the_instruction_says_reproducibly(checkpoints):
    base, adapter = checkpoints
    teacher = IPAdapterTeacher.from_pretrained(base, adapter, ip_adapter_scale=1.0, num_inference_steps=2)
    assert isinstance(teacher, Teacher) and "ip-adapter_sd15.safetensors" in teacher.version
    requests = [
        TeacherRequest(_photo(0), "a dog on the beach", seed=3),
        TeacherRequest(_photo(1), "a dog on the beach", seed=3),
        TeacherRequest(_photo(0), "a dog on the beach", seed=3),
    ]
    targets = teacher.make(requests)
    assert [t.y.shape for t in targets] == [(16, 16, 3)] * 3 and targets[0].y.dtype == np.uint8
    assert all(t.truth is None for t in targets)  # a real teacher does not know what it drew
    np.testing.assert_array_equal(targets[0].y, targets[2].y)  # same photo, instruction and seed
    assert not np.array_equal(targets[0].y, targets[1].y)  # the photo reaches the drawing


def test_a_pipeline_without_an_ip_adapter_is_refused(checkpoints):
    from diffusers import StableDiffusionPipeline

    base, _ = checkpoints
    with pytest.raises(ValueError, match="load_ip_adapter"):
        IPAdapterTeacher(StableDiffusionPipeline.from_pretrained(base), version="bare")
