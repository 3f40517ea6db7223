"""The shared training loop: resumes bit-for-bit after an interruption, stops on a bad loss."""

import json

import pytest
import torch

from cafe_core.workbench import loop as train


class Interrupted(Exception):
    pass


def make_job(seed=0, fail_at=None, nan_at=None):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def step(i):
        if i == fail_at:
            raise Interrupted
        gen = train.step_torch_generator(seed, i)
        x = torch.randn(16, 4, generator=gen)
        y = x.sum(1, keepdim=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        if i == nan_at:
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    return model, opt, step


def run(tmp, **kw):
    model, opt, step = make_job(**kw)
    cfg = train.LoopConfig(name="toy", steps=30, checkpoint_every=10, log_every=5)
    stats = train.run_loop(cfg, step, {"model": model}, opt, tmp)
    return model, stats


def test_resume_matches_uninterrupted_run(tmp_path):
    reference, stats = run(tmp_path / "a")
    assert stats["loss"] < 5.0
    with pytest.raises(Interrupted):
        run(tmp_path / "b", fail_at=17)  # dies after the step-10 checkpoint
    assert json.loads((tmp_path / "b" / train.STATE_FILE).read_text())["step"] == 10
    resumed, _ = run(tmp_path / "b")
    for p, q in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_finished_run_is_not_repeated(tmp_path):
    run(tmp_path)
    model, stats = run(tmp_path, fail_at=0)  # would raise if any step ran again
    assert stats == {}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(train.TrainingDivergedError, match="loss became nan at step 23.*last good checkpoint"):
        run(tmp_path, nan_at=23)
    state = json.loads((tmp_path / train.STATE_FILE).read_text())
    assert state["step"] == 20
    assert (tmp_path / state["latest"] / "modules.safetensors").is_file()
    assert not list(tmp_path.glob(".tmp-*"))
