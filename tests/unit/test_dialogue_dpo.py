"""The DPO baselines of multi-turn RLHF (rlhf_engine/algorithms/dialogue_dpo.py) on the tiny model:
what each collects and where its loss falls, the ranking by return (ties dropped), and a run of
each method through rlhf_engine.run.run whose first DPO margin is 0 (the reference is the base)."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf_engine.algorithms.dialogue_dpo import (
    Comparison,
    collect_last_turn,
    collect_multi_turn,
    dialogue_completion,
    rank,
)
from rlhf_engine.data.batching import collate_pairs
from rlhf_engine.data.examples import Message
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.packing import pack_pairs
from rlhf_engine.rewards import FunctionScorer
from rlhf_engine.rollout.dialogue import Dialogue, Roller, Sampling, Seed, Turn, encode_prompt
from rlhf_engine.rollout.generation import stop_ids
from rlhf_engine.rollout.hf_backend import HFBackend
from rlhf_engine.rollout.users import DatasetUsers
from rlhf_engine.run import run
from rlhf_engine.spec import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

USER_TURNS = ("second turn please", "third and last")
SEEDS = [Seed((Message("user", f"hello {i}"),), USER_TURNS) for i in range(6)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from rlhf_engine.models import loading

    return loading.load_causal_lm(tiny_model_dir), loading.load_tokenizer(tiny_model_dir)


def roller(model, tok):
    return Roller(tok, HFBackend(model, tok.pad_token_id), DatasetUsers(), Sampling(6, 1.0, 1.0, tuple(stop_ids(tok))))


def targets(pair: TokenizedPair, side: int) -> list[int]:
    ids, mask = (pair.chosen, pair.chosen_mask) if side == 0 else (pair.rejected, pair.rejected_mask)
    return [t for t, m in zip(ids, mask or [True] * len(ids)) if m]


def test_last_turn_dpo_puts_loss_only_on_the_last_reply(tiny):
    model, tok = tiny
    comparisons = collect_last_turn(roller(model, tok), SEEDS, num_turns=3, seed=0)
    assert {c.turns for c in comparisons} != {1}  # H' is drawn, not always 1
    for c in comparisons:
        for d in c.dialogues:
            assert sum(m.role == "assistant" for m in d) == c.turns and d[-1].role == "assistant"
        assert c.dialogues[0][:-1] == c.dialogues[1][:-1]  # one shared prefix through the user's turn H'
        # The prompt holds the earlier replies and the generation prompt; the completion is the last reply.
        assert tok.decode(c.pair.prompt).count("<|im_start|>assistant") == c.turns
        assert c.pair.chosen_mask is None and c.pair.rejected_mask is None
        batch = collate_pairs([c.pair], tok.pad_token_id)
        assert batch["input_ids"][0][batch["loss_mask"][0]].tolist() == c.pair.chosen
        assert batch["loss_mask"][0][:len(c.pair.prompt)].sum() == 0


def test_multi_turn_dpo_targets_every_reply_and_no_user_token(tiny):
    model, tok = tiny
    comparisons = collect_multi_turn(roller(model, tok), SEEDS, num_turns=3, seed=0)
    # The same dialogues again, one by one, on the seed's branch streams (REFUEL's, for h = 1).
    replay = [Dialogue.start(s, stream=i).copy(branch=b) for i, s in enumerate(SEEDS) for b in range(2)]
    for d in replay:
        roller(model, tok).rollout([d], [3], 0)
    for i, c in enumerate(comparisons):
        assert c.turns == 3
        assert c.pair.prompt == replay[2 * i].turns[0].prompt_ids  # the seed's history: all the pair shares
        for side in (0, 1):
            d = replay[2 * i + side]
            assert c.dialogues[side] == d.messages
            # Every reply's sampled ids are targets, in order; nothing else is ...
            assert targets(c.pair, side) == [t for turn in d.turns for t in turn.response_ids]
            ids, mask = (c.pair.chosen, c.pair.chosen_mask) if side == 0 else (c.pair.rejected, c.pair.rejected_mask)
            context = tok.decode([t for t, m in zip(ids, mask) if not m])
            assert all(turn in context for turn in USER_TURNS)  # ... and the user turns sit in between, as context
        # Both layouts address exactly the target tokens.
        plain = collate_pairs([c.pair], tok.pad_token_id)
        assert plain["input_ids"][0][plain["loss_mask"][0]].tolist() == targets(c.pair, 0)
        packed = pack_pairs([c.pair], tok.pad_token_id)
        assert packed["targets"][packed["seq"] == 1].tolist() == targets(c.pair, 1)


@pytest.mark.parametrize("finished", [True, False])
def test_a_multi_turn_completion_is_the_dialogue_as_the_template_renders_it(tiny, finished):
    _, tok = tiny
    messages = [Message("user", "hi there"), Message("assistant", "hello friend"), Message("user", "tell me more"),
                Message("assistant", "sure thing")]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    reply = lambda k: tok(messages[k].content, add_special_tokens=False)["input_ids"] + [end] * finished  # noqa: E731
    dialogue = Dialogue(Seed(tuple(messages[:1])), messages,
                        [Turn(encode_prompt(tok, messages[:1]), reply(1), finished),
                         Turn(encode_prompt(tok, messages[:3]), reply(3), finished)])
    completion, mask = dialogue_completion(tok, dialogue)
    rendered = tok(tok.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                           tokenize=False), add_special_tokens=False)["input_ids"]
    sequence = dialogue.turns[0].prompt_ids + completion
    assert sequence == rendered[:len(sequence)]  # exactly the rendering, reply ids as sampled
    assert [t for t, m in zip(completion, mask) if m] == reply(1) + reply(3)
    # An unfinished reply never sampled its end-of-turn token: it is there, as context.
    first_end = completion.index(end)
    assert mask[first_end] is finished


def scored(per_turn: dict[str, float]):
    """A per-turn reward: each assistant reply scores per_turn[its text]; 'boom' cannot be scored."""
    def reward(messages, info):
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        if "boom" in replies:
            raise ValueError("cannot judge")
        return [per_turn[r] for r in replies]
    return FunctionScorer(reward, "test")


def comparison(a: list[str], b: list[str], ids=((5, 6), (7, 8))) -> Comparison:
    def dialogue(replies):
        return [m for r in replies for m in (Message("user", "q"), Message("assistant", r))]

    return Comparison(TokenizedPair([1, 2], list(ids[0]), list(ids[1]), chosen_mask=[True, False]),
                      (dialogue(a), dialogue(b)), {}, len(a))


def test_pairs_are_preferred_by_return_and_ties_are_dropped():
    scorer = scored({"good": 1.0, "bad": 0.0, "ok": 0.5})
    comparisons = [
        comparison(["bad"], ["good"]),                       # b wins: swapped, masks follow their side
        comparison(["good", "bad"], ["bad", "good"]),        # whole dialogues: the returns tie -> dropped
        comparison(["ok", "bad"], ["ok", "good"]),           # a shared prefix: the last reply decides -> b
        comparison(["good", "ok"], ["bad", "ok"]),           # the total decides -> a
        comparison(["good"], ["boom"]),                      # failed score -> dropped
        comparison(["good"], ["bad"], ids=((5,) * 40, (7,))),  # longer than max_length -> dropped
    ]
    pairs, stats = rank(comparisons, scorer, max_length=16)
    assert [(p.chosen, p.rejected) for p in pairs] == [([7, 8], [5, 6]), ([7, 8], [5, 6]), ([5, 6], [7, 8])]
    assert pairs[0].rejected_mask == [True, False] and pairs[0].chosen_mask is None
    assert pairs[2].chosen_mask == [True, False]
    assert (stats["rollout/pairs"], stats["rollout/dropped_tied"], stats["rollout/dropped_failed_score"],
            stats["rollout/dropped_too_long"]) == (3, 1, 1, 1)
    assert stats["rollout/reward_gap"] == pytest.approx((1 + 1 + 1) / 3)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


class Recorder:
    def __init__(self):
        self.events, self.steps, self.checkpoints = [], [], {}

    def event(self, message, *, level="info", data=None):
        self.events.append(message)

    def metrics(self, step, values, *, total_steps=None):
        self.steps.append((step, values))

    def checkpoint(self, step, path, metrics):
        self.checkpoints[step] = path

    def should_stop(self):
        return False


def baseline_config(tmp_path, method, user, **hp):
    seeds = [{"user_turns": [f"hello number {i}", "tell me more"]} for i in range(8)]
    hp = {"rollouts": 6, "num_turns": 2, "user": {"type": user, "max_new_tokens": 8}, "max_new_tokens": 6,
          "batch_size": 2, "n_epochs": 1, "beta": 0.5, "learning_rate": 1e-2,
          "reward": {"type": "function", "name": "length_penalty"}, **hp}
    return TrainConfig(model="tiny-random-llama", training_file=write(tmp_path / "seeds.jsonl", seeds),
                       output_dir=str(tmp_path / "out"), method={"type": method, method: {"hyperparameters": hp}})


@pytest.mark.parametrize("method, user", [("dpo_last_turn", "dataset"), ("dpo_multi_turn", "model")])
def test_each_baseline_runs_through_the_engine(tmp_path, model_cache, method, user):
    cfg = baseline_config(tmp_path, method, user)
    rec = Recorder()
    result = run(cfg, rec, cache_dir=model_cache)
    assert (result.adapter_dir / "adapter_model.safetensors").exists() and result.steps >= 1
    collection = result.summary["collection"]
    saved = json.loads((tmp_path / "out/dialogue_dpo/pairs.json").read_text())
    assert collection["rollout/pairs"] == len(saved["pairs"])
    assert collection["rollout/pairs"] + collection["rollout/dropped_tied"] == 6
    first = rec.steps[0][1]
    assert abs(first["rewards/margins"]) < 1e-6  # the reference is the base the policy starts from
    assert [t["turn"] for t in result.summary["evaluation"]["turns"]] == [1, 2]
    assert torch.isfinite(torch.tensor(first["loss"]))


def test_a_resumed_baseline_retraces_the_uninterrupted_one(tmp_path, model_cache):
    from safetensors.torch import load_file

    cfg = baseline_config(tmp_path, "dpo_multi_turn", "dataset", n_epochs=2, checkpoint_interval=1)
    rec = Recorder()
    done = load_file(run(cfg, rec, cache_dir=model_cache).adapter_dir / "adapter_model.safetensors")
    again = run(cfg, Recorder(), cache_dir=model_cache, resume_from=rec.checkpoints[1])  # pairs reloaded from disk
    resumed = load_file(again.adapter_dir / "adapter_model.safetensors")
    assert again.steps == len(rec.checkpoints) > 1
    assert done.keys() == resumed.keys() and all(torch.equal(done[k], resumed[k]) for k in done)


def test_a_budget_of_iterations_x_rollouts_walks_the_seeds_refuel_sees():
    from rlhf_engine.algorithms.online import iteration_seeds

    seeds = list(range(7))  # fewer than the budget: the walk reshuffles on each pass, for both
    refuel = [s for t in (1, 2, 3) for s in iteration_seeds(seeds, 4, t, seed=5)]
    assert iteration_seeds(seeds, 3 * 4, 1, seed=5) == refuel
