"""Generation backend and dialogue rollouts on the tiny model: padding, prefix dedupe, stops, users."""

from __future__ import annotations

import pytest
import torch

from rlhf_engine.data.batching import collate
from rlhf_engine.data.examples import Message
from rlhf_engine.logprobs import completion_logps
from rlhf_engine.rollout.dialogue import Dialogue, Roller, Sampling, Seed, encode_prompt
from rlhf_engine.rollout.generation import row_seeds, stop_ids
from rlhf_engine.rollout.hf_backend import HFBackend, inverse_cdf, row_uniforms
from rlhf_engine.rollout.users import DatasetUsers, ModelUsers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from rlhf_engine.models import loading
    from rlhf_engine.spec import LoraSpec

    tok = loading.load_tokenizer(tiny_model_dir)
    model = loading.add_lora(loading.load_causal_lm(tiny_model_dir), LoraSpec(), seed=0)
    with torch.no_grad():  # a non-zero adapter, so "adapter off" is a different policy
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, tok


def ids(tok, text):
    return encode_prompt(tok, [Message("user", text)])


def test_left_padding_and_shared_prefill_do_not_change_greedy_outputs(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok.pad_token_id)
    short, long = ids(tok, "hello"), ids(tok, "What is the capital of France? Please explain why the sky is blue.")
    kw = dict(max_new_tokens=6, temperature=0.0, top_p=1.0, stop_token_ids=[])
    alone = backend.generate([short], **kw)[0].token_ids
    batched = backend.generate([long, short, short], **kw)  # padded next to a longer prompt, and duplicated
    assert batched[1].token_ids == alone and batched[2].token_ids == alone
    assert batched[0].token_ids == backend.generate([long], **kw)[0].token_ids


def test_stops_at_end_of_turn_and_reports_unfinished(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok.pad_token_id)
    prompt = ids(tok, "hello")
    first = backend.generate([prompt], max_new_tokens=4, temperature=0.0, top_p=1.0, stop_token_ids=[])[0]
    assert len(first.token_ids) == 4 and not first.finished
    stop = first.token_ids[1]
    stopped = backend.generate([prompt], max_new_tokens=4, temperature=0.0, top_p=1.0, stop_token_ids=[stop])[0]
    # The stop token is kept, nothing after it.
    assert stopped.token_ids == first.token_ids[:first.token_ids.index(stop) + 1] and stopped.finished
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_ids(tok)


def test_sampling_is_seeded_and_its_logprobs_match_the_training_path(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok.pad_token_id)
    prompts = [ids(tok, "hello"), ids(tok, "good answer please")] * 2
    kw = dict(max_new_tokens=8, temperature=0.7, top_p=1.0, stop_token_ids=stop_ids(tok), seed=3)
    out = backend.generate(prompts, **kw)
    assert [o.token_ids for o in out] == [o.token_ids for o in backend.generate(prompts, **kw)]
    assert out[0].token_ids != out[2].token_ids  # the two samples of one prompt are independent draws
    with torch.no_grad():
        sums, _ = completion_logps(model.eval(), collate([(p, o.token_ids) for p, o in zip(prompts, out)],
                                                         tok.pad_token_id), temperature=0.7)
    assert sums.tolist() == pytest.approx([o.logprob_sum for o in out], abs=1e-3)


def test_a_rows_samples_depend_on_its_prompt_and_seed_only(tiny):
    """Per-row random streams: common random numbers survive any change to the rest of the batch."""
    model, tok = tiny
    backend = HFBackend(model, tok.pad_token_id)
    a, b, c = ids(tok, "hello"), ids(tok, "good answer please"), ids(tok, "What is the capital of France?")
    # Every sixth token stops a row: rows leave the batch at different steps.
    kw = dict(max_new_tokens=10, temperature=1.0, top_p=0.9, stop_token_ids=list(range(0, model.config.vocab_size, 6)))
    alone = backend.generate([a], seed=[11], **kw)[0].token_ids
    crowded = backend.generate([c, a, b, a], seed=[5, 11, 7, 12], **kw)
    assert any(c.finished and len(c.token_ids) < 10 for c in crowded)  # some row left the batch early
    reordered = backend.generate([b, a, c], seed=[7, 11, 5], **kw)
    one_per_batch = HFBackend(model, tok.pad_token_id, batch_size=1).generate([c, a, b], seed=[5, 11, 7], **kw)
    assert crowded[1].token_ids == reordered[1].token_ids == one_per_batch[1].token_ids == alone
    assert crowded[3].token_ids != alone  # the same prompt under another seed: another draw
    # An int seed gives row i the stream of (seed, i): neither another row's prompt (here a shorter one,
    # which the length sort puts first) nor the batch size matters.
    first = backend.generate([b, c], seed=3, **kw)
    assert backend.generate([b, a], seed=3, **kw)[0].token_ids == first[0].token_ids
    one_by_one = HFBackend(model, tok.pad_token_id, batch_size=1).generate([b, c], seed=3, **kw)
    assert [o.token_ids for o in one_by_one] == [o.token_ids for o in first]


def test_row_seeds_and_streams():
    seeds = row_seeds(4, 3)
    assert seeds == row_seeds(4, 3) and len(set(seeds)) == 3
    assert row_seeds(4, 2)[1] != row_seeds(5, 2)[0]  # successive calls' seeds do not share streams
    assert row_seeds([9, 9], 2) == [9, 9]
    with pytest.raises(ValueError):
        row_seeds([1], 2)
    # The generators are made on the device asked for, the model's (CUDA: tests/unit/test_gpu_path_generation.py).
    u = row_uniforms(seeds, 5, torch.device("cpu"))
    assert u.device.type == "cpu" and u.shape == (3, 5) and ((0 <= u) & (u < 1)).all()
    assert torch.equal(u[2], row_uniforms(seeds[2:], 5, "cpu")[0])


def test_inverse_cdf_draws_in_proportion_and_never_a_zero_weight():
    weights = torch.tensor([0.0, 1.0, 0.0, 3.0, 0.0]).expand(1000, 5)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000  # an even grid over [0, 1)
    drawn = inverse_cdf(weights, u)
    assert set(drawn.tolist()) == {1, 3} and (drawn == 1).sum().item() == 250
    edges = inverse_cdf(weights[:2], torch.tensor([0.0, 1 - 2 ** -53], dtype=torch.float64))
    assert edges.tolist() == [1, 3]  # the ends of [0, 1) land on the first and last non-zero weight


def test_adapter_can_be_disabled_for_the_base_policy(tiny):
    model, tok = tiny
    kw = dict(max_new_tokens=6, temperature=0.0, top_p=1.0, stop_token_ids=[])
    prompt = [ids(tok, "What is the capital of France?")]
    on = HFBackend(model, tok.pad_token_id).generate(prompt, **kw)[0].token_ids
    off = HFBackend(model, tok.pad_token_id, use_adapter=False).generate(prompt, **kw)[0].token_ids
    with model.disable_adapter():
        plain = HFBackend(model, tok.pad_token_id).generate(prompt, **kw)[0].token_ids
    assert off == plain and on != off


def test_dialogue_rollout_with_dataset_and_model_users(tiny):
    model, tok = tiny
    sampling = Sampling(5, 1.0, 1.0, tuple(stop_ids(tok)))
    seeds = [Seed((Message("system", "be brief"), Message("user", "hi")), ("second", "third")),
             Seed((Message("user", "yo"),), ("only two",))]
    roller = Roller(tok, HFBackend(model, tok.pad_token_id), DatasetUsers(), sampling)
    dialogues = [Dialogue.start(s) for s in seeds]
    roller.rollout(dialogues, [roller.horizon(d, 3) for d in dialogues], seed=0)
    assert [len(d.turns) for d in dialogues] == [3, 2]  # fixed user turns run out for the second seed
    assert [m.content for m in dialogues[0].messages if m.role == "user"] == ["hi", "second", "third"]
    assert [m.role for m in dialogues[0].messages] == ["system"] + ["user", "assistant"] * 3
    for d in dialogues:  # every turn's prompt is the rendering of everything before it
        for k, turn in enumerate(d.turns, start=1):
            history = d.upto(k)[:-1]
            assert turn.prompt_ids == encode_prompt(tok, history)

    users = ModelUsers(HFBackend(model, tok.pad_token_id, use_adapter=False), tok, sampling, "play the user")
    view = users.flipped(dialogues[1].messages)
    assert [m.role for m in view] == ["system", "assistant", "user", "assistant", "user"]
    roller = Roller(tok, HFBackend(model, tok.pad_token_id), users, sampling)
    d = Dialogue.start(seeds[1])
    roller.rollout([d], [3], seed=0)
    assert len(d.turns) == 3 and [m.role for m in d.messages] == ["user", "assistant"] * 3
