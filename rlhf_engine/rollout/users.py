"""Who plays the user after the first turn.

- `DatasetUsers`: the seed's fixed user turns (the REFUEL paper's second setting). A dialogue
  ends when they run out.
- `ModelUsers`: a language model prompted to play the user (the paper's first setting). The
  transcript is shown to it with the roles swapped, so "write the assistant's next message" in
  its own chat template means "write the user's next message" here. By default it is the base
  model: the policy with its LoRA adapter disabled, no second copy of the weights.

`make_users` picks one from a job's hyperparameters (`user`, spec.UserSimulator).
"""

from __future__ import annotations

from rlhf_engine.data.examples import Message
from rlhf_engine.rollout.dialogue import Sampling, encode_prompt
from rlhf_engine.rollout.generation import stop_ids

# After the REFUEL paper's simulator (the base model prompted to play the user): read the dialogue,
# think about what to ask next, then ask it. The thinking stays unwritten: only the message is kept.
DEFAULT_USER_PROMPT = (
    "You are the user in a conversation with an AI assistant, and you want to learn about the topic you "
    "started. Read the conversation so far. Think about what the assistant's last answer left open, or "
    "what you would naturally want to know next. Then write your next message to the assistant: one "
    "question or request, in the first person, with no preamble and no role label."
)
_FLIP = {"user": "assistant", "assistant": "user"}


class DatasetUsers:
    def max_turns(self, seed) -> int | None:
        return 1 + len(seed.later_user_turns)

    def next_turns(self, dialogues, *, seed: list[int]) -> list[str]:
        # The seed's history holds user turn 1; later turn k is later_user_turns[k - 2].
        return [d.seed.later_user_turns[d.user_turns - 1] for d in dialogues]


class ModelUsers:
    def __init__(self, backend, tokenizer, sampling: Sampling, system_prompt: str | None = None):
        self.backend, self.tokenizer, self.sampling = backend, tokenizer, sampling
        self.system_prompt = system_prompt or DEFAULT_USER_PROMPT

    def max_turns(self, seed) -> int | None:
        return None

    def flipped(self, messages: list[Message]) -> list[Message]:
        """The simulator's view: its own system prompt, then the dialogue with roles swapped."""
        return [Message("system", self.system_prompt)] + [
            Message(_FLIP[m.role], m.content) for m in messages if m.role != "system"]

    def next_turns(self, dialogues, *, seed: list[int]) -> list[str]:
        """One user turn per dialogue, dialogue i sampled with seed[i]."""
        prompts = [encode_prompt(self.tokenizer, self.flipped(d.messages)) for d in dialogues]
        s = self.sampling
        outs = self.backend.generate(prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                     top_p=s.top_p, stop_token_ids=list(s.stop_ids), seed=seed)
        texts = [self.tokenizer.decode(o.token_ids, skip_special_tokens=True).strip() for o in outs]
        return [t or "Please go on." for t in texts]  # an empty turn would leave the policy nothing to answer


def make_users(hp, model, tokenizer, sampling: Sampling, registry, cache_dir, base_name: str, precision=None):
    """Who plays the user for a job with hyperparameters `hp`: the dataset's turns, the policy
    with its adapter off (the base model), or another registry model loaded in `precision`."""
    if getattr(hp, "user", None) is None or hp.user.type == "dataset":
        return DatasetUsers()
    # The simulator samples with its own limits (UserSimulator), ending at its own turn terminators.
    sampling = Sampling(hp.user.max_new_tokens, hp.user.temperature, hp.top_p, sampling.stop_ids)
    if hp.user.model in (None, base_name):  # the base model: the policy with its adapter disabled
        from rlhf_engine.rollout.hf_backend import HFBackend

        return ModelUsers(HFBackend(model, tokenizer.pad_token_id, use_adapter=False), tokenizer, sampling,
                          hp.user.system_prompt)
    from rlhf_engine.models import loading
    from rlhf_engine.precision import Precision
    from rlhf_engine.rollout.backend import make_backend

    user_dir = loading.materialise(registry.get(hp.user.model), cache_dir)
    user_tok = loading.load_tokenizer(user_dir)
    precision = precision or Precision.native(model)
    user_lm = loading.load_causal_lm(user_dir, dtype=precision.weights, device=precision.device)
    user_sampling = Sampling(sampling.max_new_tokens, sampling.temperature, sampling.top_p, tuple(stop_ids(user_tok)))
    return ModelUsers(make_backend(user_lm, user_tok, use_adapter=False), user_tok, user_sampling,
                      hp.user.system_prompt)
