"""CAFE's generator G: eq. 3's loss and its training, sampling, saving and loading."""

import numpy as np
import pytest
import torch

from cafe_core.models.attention import ConditioningConfig
from cafe_core.models.generator import CafeGenerator
from cafe_core.testing import TINY_CLIP_DIM, TINY_DINO_DIM, TINY_DINO_TOKENS, tiny_generator
from cafe_core.testing import tiny_conditions as cond

CLIP_DIM, DINO_DIM, DINO_TOKENS = TINY_CLIP_DIM, TINY_DINO_DIM, TINY_DINO_TOKENS


@pytest.mark.parametrize("attention", ["joint", "decoupled"])
def test_loss_trains_unet_conditioner_and_new_projections(attention):
    gen = tiny_generator(attention)
    c, d = cond(4)
    target = torch.rand(4, 3, 8, 8) * 2 - 1
    draws = gen.training_draws(target.shape, torch.Generator().manual_seed(0), drop_p=0.1)
    loss = gen(target, c, d, **draws)
    loss.backward()
    assert torch.isfinite(loss)
    proc = next(p for p in gen.processors)
    assert proc.to_k_dino.weight.grad is not None and proc.to_k_dino.weight.grad.abs().sum() > 0
    assert gen.conditioner.clip_proj.weight.grad.abs().sum() > 0
    assert gen.conditioner.dino_proj.weight.grad.abs().sum() > 0


def test_drop_rates_are_independent_and_near_p():
    gen = tiny_generator()
    draws = gen.training_draws((20000, 3, 8, 8), torch.Generator().manual_seed(0), drop_p=0.1)
    drop_c, drop_d = ~draws["keep_c"], ~draws["keep_d"]
    assert abs(drop_c.float().mean() - 0.1) < 0.01 and abs(drop_d.float().mean() - 0.1) < 0.01
    assert abs((drop_c & drop_d).float().mean() - 0.01) < 0.004  # independent: p^2


@pytest.mark.parametrize("guidance", ["both", "clip_only", "dino_only"])
@pytest.mark.parametrize("scheduler", ["ddim", "dpmsolver++"])
def test_sampling_is_seeded_and_batched(guidance, scheduler):
    gen = tiny_generator().eval()
    c, d = cond(3)
    a = gen.generate(c, d, guidance=guidance, num_inference_steps=4, seed=7, scheduler=scheduler)
    b = gen.generate(c, d, guidance=guidance, num_inference_steps=4, seed=7, scheduler=scheduler)
    assert a.shape == (3, 8, 8, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    single = gen.generate(c[:1], d[:1], guidance=guidance, num_inference_steps=4, seed=7, scheduler=scheduler)
    assert np.abs(single[0].astype(int) - a[0].astype(int)).max() <= 1  # batching does not change a sample


def test_save_and_load_round_trip(tmp_path):
    gen = tiny_generator("decoupled")
    with torch.no_grad():
        for p in gen.processors.parameters():
            p.add_(0.1)
    gen.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    again = CafeGenerator.from_pretrained(tmp_path / "g")
    assert again.config == gen.config
    c, d = cond(2)
    np.testing.assert_array_equal(
        gen.eval().generate(c, d, num_inference_steps=3), again.generate(c, d, num_inference_steps=3)
    )
    with pytest.raises(FileNotFoundError, match="not a CAFE generator folder"):
        CafeGenerator.from_pretrained(tmp_path)


def test_bad_inputs_fail_clearly():
    gen = tiny_generator().eval()
    c, d = cond(2)
    with pytest.raises(ValueError, match="same batch size"):
        gen.generate(c, d[:1])
    with pytest.raises(ValueError, match="guidance must be one of"):
        gen.generate(c, d, guidance="text")
    with pytest.raises(ValueError, match="attention must be one of"):
        ConditioningConfig(1, 1, 1, 1, attention="sum")


def _toy_data(n=16, seed=0):
    """(target parameters (n, 3, 8, 8) of random uint8 images, c, d): what train_generator reads."""
    from cafe_core.models.generator import target_parameters

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    targets = target_parameters(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    c = torch.from_numpy(rng.normal(size=(n, CLIP_DIM))).float()
    d = torch.from_numpy(rng.normal(size=(n, DINO_TOKENS, DINO_DIM))).float()
    return targets, c, d


class Killed(Exception):
    pass


def test_min_snr_weights_down_weigh_only_the_clean_timesteps():
    from diffusers.training_utils import compute_snr

    from cafe_core.models.generator import min_snr_weights

    gen = tiny_generator()
    t = torch.arange(0, gen.scheduler.config.num_train_timesteps, 37)
    snr = compute_snr(gen.scheduler, t)
    w = min_snr_weights(gen.scheduler, t, 5.0)
    assert torch.all(w[snr <= 5.0] == 1.0) and torch.all(w[snr > 5.0] < 1.0)
    torch.testing.assert_close(w[snr > 5.0], 5.0 / snr[snr > 5.0])
    with pytest.raises(ValueError, match="snr_gamma must be > 0"):
        min_snr_weights(gen.scheduler, t, 0.0)


def test_min_snr_loss_is_the_weighted_mean_of_per_sample_losses():
    from cafe_core.models.generator import min_snr_weights

    gen = tiny_generator()
    c, d = cond(4)
    target = torch.rand(4, 3, 8, 8) * 2 - 1
    draws = gen.training_draws(target.shape, torch.Generator().manual_seed(0))
    n = gen.scheduler.config.num_train_timesteps
    draws["timesteps"] = torch.tensor([0, 2, n // 2, n - 1])  # clean to noisy: weights below and at 1
    per_sample = []
    for i in range(4):  # each sample alone: the plain loss of one sample is its own MSE
        one = {k: v[i : i + 1] for k, v in draws.items()}
        per_sample.append(gen(target[i : i + 1], c[i : i + 1], d[i : i + 1], **one))
    expected = (torch.stack(per_sample) * min_snr_weights(gen.scheduler, draws["timesteps"], 5.0)).mean()
    torch.testing.assert_close(gen(target, c, d, **draws, snr_gamma=5.0), expected)
    assert gen(target, c, d, **draws, snr_gamma=5.0) < gen(target, c, d, **draws)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_eq3_trains_what_the_schedulers_prediction_type_says(kind):
    """SD2-768 predicts the velocity: fine-tuning it on the noise would teach it another task."""
    from diffusers import DDPMScheduler

    from cafe_core.models.generator import min_snr_weights

    gen = tiny_generator()
    gen.scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=kind)
    c, d = cond(2)
    target = torch.rand(2, 3, 8, 8) * 2 - 1
    draws = gen.training_draws(target.shape, torch.Generator().manual_seed(0))
    draws["timesteps"] = torch.tensor([3, 80])
    with torch.no_grad():
        tokens = gen.conditioner(c, d, draws["keep_c"], draws["keep_d"])
        noisy = gen.scheduler.add_noise(target, draws["noise"], draws["timesteps"])
        pred = gen.unet(noisy, draws["timesteps"], encoder_hidden_states=tokens).sample
        wanted = draws["noise"]
        if kind == "v_prediction":
            wanted = gen.scheduler.get_velocity(target, draws["noise"], draws["timesteps"])
        torch.testing.assert_close(gen(target, c, d, **draws), torch.nn.functional.mse_loss(pred, wanted))
        snr = gen.scheduler.alphas_cumprod[draws["timesteps"]] / (1 - gen.scheduler.alphas_cumprod[draws["timesteps"]])
        divisor = snr + 1 if kind == "v_prediction" else snr
        torch.testing.assert_close(
            min_snr_weights(gen.scheduler, draws["timesteps"], 5.0), snr.clamp(max=5.0) / divisor
        )


def test_a_prediction_type_g_cannot_train_is_refused():
    from diffusers import DDPMScheduler

    gen = tiny_generator()
    gen.scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type="sample")
    c, d = cond(2)
    target = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="its scheduler says 'sample'"):
        gen(target, c, d, **gen.training_draws(target.shape, torch.Generator().manual_seed(0)))


def test_ema_publishes_the_average_of_the_weights_along_the_run(tmp_path):
    from cafe_core.workbench.training import GeneratorTraining, train_generator

    targets, c, d = _toy_data()
    last = tiny_generator()
    train_generator(last, targets, c, d, GeneratorTraining(steps=6, batch_size=4, lr=1e-2), tmp_path / "last")
    averaged = tiny_generator()
    cfg = GeneratorTraining(steps=6, batch_size=4, lr=1e-2, ema_decay=0.5)
    train_generator(averaged, targets, c, d, cfg, tmp_path / "ema")
    start = tiny_generator()
    w = {k: v for k, v in averaged.state_dict().items() if "to_k_dino" in k}
    for key, value in w.items():  # between the start and the last weights, at neither end
        moved, end = (value - start.state_dict()[key]).norm(), (last.state_dict()[key] - start.state_dict()[key]).norm()
        assert 0 < moved < end, key
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        train_generator(tiny_generator(), targets, c, d, GeneratorTraining(6, 4, 1e-2, ema_decay=1.0), tmp_path / "x")


@pytest.mark.parametrize("options", [{}, {"ema_decay": 0.9, "snr_gamma": 5.0}], ids=["eq3", "ema-min-snr"])
def test_interrupted_generator_training_resumes_to_the_same_weights(tmp_path, options):
    from cafe_core.workbench.training import GeneratorTraining, train_generator

    targets, c, d = _toy_data()
    cfg = GeneratorTraining(steps=6, batch_size=4, lr=1e-3, checkpoint_every=2, **options)
    reference = tiny_generator()
    train_generator(reference, targets, c, d, cfg, tmp_path / "a")

    def die_at_4(step):
        if step == 4:
            raise Killed

    interrupted = tiny_generator()
    with pytest.raises(Killed):
        train_generator(interrupted, targets, c, d, cfg, tmp_path / "b", on_checkpoint=die_at_4)
    resumed = tiny_generator()  # a fresh process would rebuild the model from the pretrained weights
    train_generator(resumed, targets, c, d, cfg, tmp_path / "b")
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_nan_loss_stops_generator_training(tmp_path):
    from cafe_core.workbench.loop import TrainingDivergedError
    from cafe_core.workbench.training import GeneratorTraining, train_generator

    targets, c, d = _toy_data()
    c[:] = float("nan")
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        train_generator(tiny_generator(), targets, c, d, GeneratorTraining(steps=3, batch_size=4, lr=1e-3), tmp_path)


def test_per_image_seeds_make_an_image_independent_of_its_batch():
    gen = tiny_generator().eval()
    c, d = cond(3)
    batch = gen.generate(c, d, num_inference_steps=3, seed=[5, 6, 7])
    alone = gen.generate(c[2:], d[2:], num_inference_steps=3, seed=[7])
    assert np.abs(batch[2].astype(int) - alone[0].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="2 seeds for 3 images"):
        gen.generate(c, d, num_inference_steps=3, seed=[1, 2])


@pytest.mark.parametrize(
    "compute",
    [{"micro_batch_size": 1}, {"micro_batch_size": 3}, {"gradient_checkpointing": True}],
    ids=["micro-1", "micro-3", "checkpointing"],
)
def test_micro_batches_and_checkpointing_give_the_batchs_loss_and_gradient(tmp_path, compute):
    """A GPU that cannot hold the paper's batch 64 at once trains G in micro-batches, or with its
    activations recomputed: how a step is computed must not change what it computes."""
    from accelerate import Accelerator

    from cafe_core.workbench.config import StepCompute
    from cafe_core.workbench.training import GeneratorTraining, generator_step, train_generator

    targets, c, d = _toy_data()
    accelerator = Accelerator(cpu=True)

    def one_step(**extra):
        gen = tiny_generator().train()
        if extra.get("gradient_checkpointing"):
            gen.enable_gradient_checkpointing()
        forwards = _count_forwards(gen.unet.down_blocks[0].resnets[0])
        draws = gen.training_draws((4, 3, 8, 8), torch.Generator().manual_seed(0))
        batch = {"targets": targets[:4], "c": c[:4], "d": d[:4], **draws}
        loss = generator_step(
            accelerator, gen, gen, batch, GeneratorTraining(1, 4, 1e-2, snr_gamma=5.0, compute=StepCompute(**extra))
        )
        return loss, {n: p.grad for n, p in gen.named_parameters() if p.grad is not None}, len(forwards)

    loss, grads, _ = one_step()
    changed_loss, changed_grads, forwards = one_step(**compute)
    # one forward of the block per micro-batch; checkpointing runs it again in backward
    assert forwards == (-(-4 // compute["micro_batch_size"]) if "micro_batch_size" in compute else 2)
    torch.testing.assert_close(changed_loss, loss, rtol=1e-5, atol=0)
    assert grads.keys() == changed_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(changed_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    # and train_generator computes its steps so
    trained = tiny_generator()
    calls = _count_forwards(trained.unet.down_blocks[0].resnets[0])
    train_generator(
        trained, targets, c, d, GeneratorTraining(2, 4, 1e-2, compute=StepCompute(**compute)), tmp_path / "trained"
    )
    assert len(calls) == 2 * forwards


def _count_forwards(module) -> list:
    """A list that grows by one at each run of ``module.forward``, recomputations included (which
    torch's checkpoint runs without the module's hooks)."""
    calls, forward = [], module.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    module.forward = counted
    return calls


def test_a_micro_batch_size_below_one_is_refused(tmp_path):
    from cafe_core.workbench.config import StepCompute
    from cafe_core.workbench.training import GeneratorTraining, train_generator

    targets, c, d = _toy_data()
    with pytest.raises(ValueError, match="micro_batch_size must be at least 1"):
        train_generator(
            tiny_generator(),
            targets,
            c,
            d,
            GeneratorTraining(2, 4, 1e-2, compute=StepCompute(micro_batch_size=0)),
            tmp_path,
        )
