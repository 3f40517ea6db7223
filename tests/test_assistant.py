"""The CAFE assistant M: a frozen LM, V / H / [GEN] trainable, eq. 2 loss, greedy generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cafe_core.models.assistant import AssistantConfig, CafeAssistant, embedding_distance
from cafe_core.testing import tiny_llama

PATCHES, PATCH_DIM, CLIP_DIM = 5, 12, 8


@pytest.fixture(scope="module")
def world_tokenizer_factory():
    from cafe_core.world import World
    from cafe_core.world.datasets import build_tokenizer

    world = World()
    return lambda: build_tokenizer(world, for_clip=False)


def make_assistant(factory, distance="mse", lambda_=1.0, seed=0) -> CafeAssistant:
    tok = factory()
    lm = tiny_llama(len(tok), seed)
    torch.manual_seed(seed + 1)
    return CafeAssistant(
        lm,
        tok,
        AssistantConfig(PATCH_DIM, CLIP_DIM, lambda_=lambda_, distance=distance),
    )


def batch(m: CafeAssistant):
    prompts = [
        m.encode_prompt([{"role": "user", "content": "a red hat"}]),
        m.encode_prompt([{"role": "user", "content": "a"}]),
    ]
    responses = [m.encode_response("a red hat"), m.encode_response("red")]
    g = torch.Generator().manual_seed(3)
    patches = torch.randn(2, PATCHES, PATCH_DIM, generator=g)
    target = torch.randn(2, CLIP_DIM, generator=g)
    return prompts, patches, responses, target


def c_hat_of_full_pass(m, inputs: dict) -> torch.Tensor:
    """H applied to the last hidden state at [GEN], from one plain forward of the whole sequence."""
    hs = m.lm(
        inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"], output_hidden_states=True
    ).hidden_states[-1]
    return m.gen_head(hs[torch.arange(hs.shape[0]), inputs["gen_positions"]])


def test_config_validates_distance():
    with pytest.raises(ValueError, match="distance"):
        AssistantConfig(4, 4, distance="l1")
    AssistantConfig(4, 4, distance="neg_cosine")


def test_tokens_added_and_embeddings_resized(world_tokenizer_factory):
    tok = world_tokenizer_factory()
    n = len(tok)
    lm = tiny_llama(n)
    m = CafeAssistant(lm, tok, AssistantConfig(PATCH_DIM, CLIP_DIM))
    assert len(tok) == n + 2
    assert lm.get_input_embeddings().num_embeddings == n + 2
    assert {m.image_token_id, m.gen_token_id} == {n, n + 1}
    prompt = m.build_prompt([{"role": "user", "content": "a red hat"}])
    assert prompt.count("<image>") == 1 and "<image> a red hat" in prompt


def test_only_v_h_gen_train(world_tokenizer_factory):
    m = make_assistant(world_tokenizer_factory)
    trainable = m.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in m.parameters() if p.requires_grad}
    assert len(trainable) == 5
    assert not any(p.requires_grad for p in m.lm.parameters())
    lm_before = {k: v.clone() for k, v in m.lm.state_dict().items()}
    out = m(*batch(m))
    out["loss"].backward()
    for p in trainable:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.lm.parameters())
    torch.optim.AdamW(m.trainable_parameters(), lr=1e-2).step()
    for k, v in m.lm.state_dict().items():
        assert torch.equal(v, lm_before[k]), k
    m.train()
    assert not m.lm.training


def test_image_placeholder_replaced_by_projected_patches(world_tokenizer_factory):
    m = make_assistant(world_tokenizer_factory)
    prompts, patches, responses, _ = batch(m)
    inputs = m.prepare_inputs(prompts, patches, responses)
    table = m.lm.get_input_embeddings().weight
    for i, ids in enumerate(prompts):
        k = ids.index(m.image_token_id)
        row = inputs["inputs_embeds"][i]
        torch.testing.assert_close(row[:k], table[ids[:k]])
        torch.testing.assert_close(row[k : k + PATCHES], m.visual_proj(patches[i]))
        rest = ids[k + 1 :] + responses[i]
        n = k + PATCHES + len(rest)
        torch.testing.assert_close(row[k + PATCHES : n], table[rest])
        torch.testing.assert_close(row[n], m.gen_embedding)
        assert int(inputs["gen_positions"][i]) == n
        assert inputs["attention_mask"][i].tolist() == [1] * (n + 1) + [0] * (row.shape[0] - n - 1)
    # The LM really receives them: hook the first decoder layer's input.
    seen = {}
    handle = m.lm.model.layers[0].register_forward_hook(
        lambda mod, args, kwargs, out: seen.setdefault("x", args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True,
    )
    try:
        m(prompts, patches, responses)
    finally:
        handle.remove()
    torch.testing.assert_close(seen["x"], inputs["inputs_embeds"])


def test_labels_mask_all_but_response(world_tokenizer_factory):
    m = make_assistant(world_tokenizer_factory)
    prompts, patches, responses, _ = batch(m)
    inputs = m.prepare_inputs(prompts, patches, responses)
    for i, ids in enumerate(prompts):
        labels = inputs["labels"][i].tolist()
        start = len(ids) - 1 + PATCHES
        assert labels[:start] == [-100] * start
        assert labels[start : start + len(responses[i])] == responses[i]
        assert all(x == -100 for x in labels[start + len(responses[i]) :])  # [GEN] and padding
    no_resp = m.prepare_inputs(prompts, patches)
    assert bool((no_resp["labels"] == -100).all())


@pytest.mark.parametrize("prompt", ["a red hat", "<image> a <image> red"])
def test_missing_or_repeated_image_raises(world_tokenizer_factory, prompt):
    m = make_assistant(world_tokenizer_factory)
    ids = m.tokenizer(f"<s> [INST] {prompt} [/INST]", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="image placeholder"):
        m.prepare_inputs([ids], torch.zeros(1, PATCHES, PATCH_DIM))


@pytest.mark.parametrize("distance", ["mse", "neg_cosine"])
def test_loss_matches_hand_computation(world_tokenizer_factory, distance):
    m = make_assistant(world_tokenizer_factory, distance=distance, lambda_=0.7)
    prompts, patches, responses, target = batch(m)
    out = m(prompts, patches, responses, target)
    c = out["c_hat"].detach()
    if distance == "mse":
        expected = ((c - target) ** 2).sum() / c.numel()
    else:
        expected = torch.stack([1 - (a @ b) / (a.norm() * b.norm()) for a, b in zip(c, target)]).mean()
    torch.testing.assert_close(out["embed_loss"], expected)
    torch.testing.assert_close(out["loss"], out["lm_loss"] + 0.7 * expected)
    # LM loss by hand: cross entropy of the logits one step before each response token.
    inputs = m.prepare_inputs(prompts, patches, responses)
    logits = m.lm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]).logits
    labels = inputs["labels"]
    keep = labels[:, 1:] != -100
    hand = F.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep])
    torch.testing.assert_close(out["lm_loss"], hand)
    # c_hat reads the last hidden state at [GEN]
    torch.testing.assert_close(c, c_hat_of_full_pass(m, inputs))


def test_distances_differ():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    assert embedding_distance(a, b, "mse").item() == pytest.approx(0.5)
    assert embedding_distance(a, b, "neg_cosine").item() == pytest.approx(0.0)


@pytest.mark.parametrize("distance", ["mse", "neg_cosine"])
def test_loss_decreases_on_overfit_batch(world_tokenizer_factory, distance):
    m = make_assistant(world_tokenizer_factory, distance=distance)
    data = batch(m)
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-2)
    first = m(*data)
    for _ in range(30):
        out = m(*data)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    last = m(*data)
    # The LM is frozen and random, so its loss moves only through V's image tokens and [GEN]'s
    # context; the embedding loss is free to fall.
    assert last["loss"].item() < 0.9 * first["loss"].item()
    assert last["embed_loss"].item() < 0.5 * first["embed_loss"].item()
    assert last["lm_loss"].item() < first["lm_loss"].item()


def test_generate_matches_teacher_forcing(world_tokenizer_factory):
    m = make_assistant(world_tokenizer_factory)
    prompts, patches, _, _ = batch(m)
    texts, c_hat = m.generate(prompts, patches, max_new_tokens=6)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert c_hat.shape == (2, CLIP_DIM)
    # Batched, left-padded KV-cache decoding agrees with a teacher-forced pass over the same response.
    generated = m.last_generated_ids
    assert all(1 <= len(g) <= 6 for g in generated)
    with torch.no_grad():
        inputs = m.prepare_inputs(prompts, patches, generated)
        out = m.lm(
            inputs_embeds=inputs["inputs_embeds"],
            attention_mask=inputs["attention_mask"],
            output_hidden_states=True,
        )
        for i, g in enumerate(generated):
            start = int(inputs["gen_positions"][i]) - len(g)
            greedy = out.logits[i, start - 1 : start - 1 + len(g)].argmax(-1).tolist()
            assert greedy == g
        h = out.hidden_states[-1][torch.arange(2), inputs["gen_positions"]]
        torch.testing.assert_close(c_hat, m.gen_head(h), atol=1e-4, rtol=1e-4)
    single, c_single = m.generate(prompts[1:], patches[1:], max_new_tokens=6)
    assert single == texts[1:]
    torch.testing.assert_close(c_single, c_hat[1:], atol=1e-4, rtol=1e-4)


def test_generate_stops_at_eos(world_tokenizer_factory):
    m = make_assistant(world_tokenizer_factory)
    eos = m.tokenizer.eos_token_id
    prompts, patches, _, _ = batch(m)

    def force_eos_in_sample_0(module, args, out):
        out = out.clone()
        out[0, :, eos] += 1e4
        return out

    handle = m.lm.lm_head.register_forward_hook(force_eos_in_sample_0)
    try:
        texts, c_hat = m.generate(prompts, patches, max_new_tokens=5)
        generated = m.last_generated_ids
        assert generated[0] == [eos] and texts[0] == ""
        assert eos not in generated[1][:-1] and (len(generated[1]) == 5 or generated[1][-1] == eos)
        # Sample 0 stopped early: its [GEN] still sees only [prompt][EOS] at the training positions.
        with torch.no_grad():
            inputs = m.prepare_inputs(prompts, patches, generated)
            torch.testing.assert_close(c_hat, c_hat_of_full_pass(m, inputs), atol=1e-4, rtol=1e-4)
    finally:
        handle.remove()


def test_a_chat_past_the_context_is_refused_with_the_lengths_that_matter(world_tokenizer_factory):
    """Past its context an LM answers with degenerate text instead of failing: refuse it first."""
    from cafe_core.models.assistant import PromptTooLong

    m = make_assistant(world_tokenizer_factory)
    limit = m.context_length
    assert limit == m.lm.config.max_position_embeddings
    prompts, patches, _, _ = batch(m)
    long = m.encode_prompt([{"role": "user", "content": " ".join(["a red hat"] * limit)}])
    with pytest.raises(
        PromptTooLong, match=rf"chat 1 is \d+ positions long \({PATCHES} of them the photo's\).*holds {limit}"
    ):
        m.generate([prompts[0], long], patches, max_new_tokens=5)
    m.generate([prompts[0], prompts[1]], patches, max_new_tokens=5)  # chats that fit are answered


def test_unknown_words_are_those_the_tokenizer_has_no_token_for(world_tokenizer_factory):
    m = make_assistant(world_tokenizer_factory)
    assert m.unknown_words("Can you put this dog on the beach, dog?") == ["dog"]
    assert m.unknown_words("Generate an image for this ball on the beach.") == []


def test_save_load_round_trip(world_tokenizer_factory, tmp_path):
    m = make_assistant(world_tokenizer_factory, seed=0)
    folder = m.save_pretrained(tmp_path / "m")
    assert (folder / "assistant.safetensors").is_file() and (folder / "assistant_config.json").is_file()
    other = make_assistant(world_tokenizer_factory, seed=5)
    assert not torch.equal(other.visual_proj.weight, m.visual_proj.weight)
    other.load_trainable(folder)
    for a, b in zip(m.trainable_parameters(), other.trainable_parameters()):
        assert torch.equal(a, b)
    wrong = CafeAssistant(
        tiny_llama(len(world_tokenizer_factory())),
        world_tokenizer_factory(),
        AssistantConfig(PATCH_DIM + 1, CLIP_DIM),
    )
    with pytest.raises(ValueError, match="patch_dim"):
        wrong.load_trainable(folder)


def test_llama2_13b_on_meta(world_tokenizer_factory):
    from cafe_core.models.reference import build_on_meta

    lm = build_on_meta("meta-llama/Llama-2-13b-chat-hf")
    m = CafeAssistant(lm, world_tokenizer_factory(), AssistantConfig(patch_dim=1024, clip_dim=768))
    assert lm.get_input_embeddings().num_embeddings == 32000  # never shrunk
    n_train = sum(p.numel() for p in m.trainable_parameters())
    assert n_train == 1024 * 5120 + 5120 + 5120 * 768 + 768 + 5120
    prompts = [
        m.encode_prompt([{"role": "user", "content": "a red hat"}]),
        m.encode_prompt([{"role": "user", "content": "a"}]),
    ]
    patches = torch.empty(2, 577, 1024, device="meta")  # ViT-L/14@336: 24*24 patches + CLS
    responses = [m.encode_response("a red hat"), m.encode_response("red")]
    inputs = m.prepare_inputs(prompts, patches, responses)
    assert inputs["inputs_embeds"].shape[:2] == (
        2,
        len(prompts[0]) - 1 + 577 + len(responses[0]) + 1,
    )
    assert inputs["inputs_embeds"].shape[-1] == 5120
    out = m(prompts, patches, responses, torch.empty(2, 768, device="meta"))
    assert out["c_hat"].shape == (2, 768)
    assert out["loss"].shape == ()


def _training_data(m: CafeAssistant, n: int = 12):
    g = torch.Generator().manual_seed(5)
    words = ["a red hat", "a", "red", "a hat", "hat red"]
    prompts = [m.encode_prompt([{"role": "user", "content": words[i % 5]}]) for i in range(n)]
    responses = [m.encode_response(words[(i + 2) % 5]) for i in range(n)]
    return prompts, responses, torch.randn(n, PATCHES, PATCH_DIM, generator=g), torch.randn(n, CLIP_DIM, generator=g)


def test_interrupted_assistant_training_resumes_to_the_same_weights(world_tokenizer_factory, tmp_path):
    from cafe_core.workbench.training import AssistantTraining, train_assistant

    def trained(ckpt, stop_after=None):
        m = make_assistant(world_tokenizer_factory)
        data = _training_data(m)
        config = AssistantTraining(steps=4, batch_size=4, lr=1e-2, checkpoint_every=2)
        if stop_after is not None:  # a run killed after its first checkpoint
            train_assistant(
                m, *data, AssistantTraining(steps=stop_after, batch_size=4, lr=1e-2, checkpoint_every=2), ckpt
            )
            m = make_assistant(world_tokenizer_factory)  # a fresh process: weights from the checkpoint only
        stats = train_assistant(m, *data, config, ckpt)
        return m, stats

    straight, stats = trained(tmp_path / "a")
    assert {"loss", "lm_loss", "embed_loss"} <= set(stats)
    resumed, _ = trained(tmp_path / "b", stop_after=2)
    for name, value in straight.trainable_state_dict().items():
        torch.testing.assert_close(resumed.trainable_state_dict()[name], value, rtol=0, atol=0)
    frozen = make_assistant(world_tokenizer_factory)
    for (name, p), (_, q) in zip(straight.lm.named_parameters(), frozen.lm.named_parameters()):
        assert torch.equal(p, q), f"frozen LM parameter {name} changed"
    checkpoint = next((tmp_path / "a").glob("step-*")) / "modules.safetensors"
    from safetensors.torch import load_file

    assert set(load_file(checkpoint)) == {f"assistant.{k}" for k in straight.trainable_state_dict()}  # never the LM


def test_from_pretrained_keeps_trainables_float32_beside_a_bf16_lm(world_tokenizer_factory, tmp_path):
    m = make_assistant(world_tokenizer_factory)
    m.lm.save_pretrained(tmp_path / "lm")
    m.tokenizer.save_pretrained(tmp_path / "lm")
    m.save_pretrained(tmp_path / "trained")
    loaded = CafeAssistant.from_pretrained(tmp_path / "lm", tmp_path / "trained", dtype=torch.bfloat16)
    assert loaded.lm.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in loaded.trainable_parameters())
    torch.testing.assert_close(loaded.gen_head.weight, m.gen_head.weight)
    prompts, patches = batch(loaded)[0], batch(loaded)[1]
    texts, c_hat = loaded.generate(prompts, patches, max_new_tokens=4)
    assert len(texts) == 2 and c_hat.dtype == torch.float32 and torch.isfinite(c_hat).all()
    with pytest.raises(ValueError, match="either `trained`"):
        CafeAssistant.from_pretrained(tmp_path / "lm")
    with pytest.raises(FileNotFoundError, match="no trained assistant"):
        CafeAssistant.from_pretrained(tmp_path / "lm", tmp_path / "nothing")


@pytest.mark.parametrize(
    "compute",
    [{"micro_batch_size": 1}, {"micro_batch_size": 3}, {"gradient_checkpointing": True}],
    ids=["micro-1", "micro-3", "checkpointing"],
)
def test_micro_batches_and_checkpointing_give_the_batchs_losses_and_gradients(
    world_tokenizer_factory, tmp_path, compute
):
    """Eq. 2's LM loss is a mean over response tokens: micro-batches of responses of unequal length
    must be weighted by their tokens, not their rows, to give the whole batch's gradient."""
    from accelerate import Accelerator

    from cafe_core.workbench.config import StepCompute
    from cafe_core.workbench.training import AssistantTraining, assistant_step, train_assistant

    accelerator = Accelerator(cpu=True)

    def one_step(**extra):
        m = make_assistant(world_tokenizer_factory).train()
        if extra.get("gradient_checkpointing"):
            m.enable_gradient_checkpointing()
        calls = []  # transformers checkpoints a layer's forward, so count a submodule's calls
        m.lm.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        prompts, responses, patches, targets = _training_data(m, n=4)
        assert len({len(r) for r in responses}) > 1  # responses of unequal length
        batch = {"prompt_ids": prompts, "response_ids": responses, "patches": patches, "targets": targets}
        losses = assistant_step(accelerator, m, batch, AssistantTraining(1, 4, compute=StepCompute(**extra)))
        return m, losses, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}, len(calls)

    _, losses, grads, _ = one_step()
    m, changed_losses, changed_grads, calls = one_step(**compute)
    if "micro_batch_size" in compute:
        assert calls == -(-4 // compute["micro_batch_size"])  # one forward per micro-batch
    else:
        assert calls == 2  # recomputed in backward
        assert not m.lm.model.layers[0].self_attn.training  # the LM's own modules stay in eval mode
    for key in ("loss", "lm_loss", "embed_loss"):
        torch.testing.assert_close(changed_losses[key], losses[key], rtol=1e-5, atol=0)
    assert grads.keys() == changed_grads.keys() == {f"{k}" for k in grads}
    for name, grad in grads.items():
        torch.testing.assert_close(changed_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    # and train_assistant computes its steps so
    trained = make_assistant(world_tokenizer_factory)
    counted = []
    trained.lm.model.layers[0].mlp.register_forward_pre_hook(lambda *_: counted.append(1))
    train_assistant(
        trained, *_training_data(trained), AssistantTraining(2, 4, compute=StepCompute(**compute)), tmp_path / "m"
    )
    assert len(counted) == 2 * calls
