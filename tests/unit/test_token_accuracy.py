"""OpenAI's mean token accuracy for supervised jobs: the share of completion tokens that are the
model's most likely next token, from the same logits as the loss."""

import torch

from rlhf_engine.algorithms.supervised import SFT
from rlhf_engine.data.batching import collate
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.logprobs import completion_logps, completion_logps_and_hits
from rlhf_engine.models import loading


def test_hits_are_the_argmax_matches_over_completion_tokens_only(tiny_model_dir, one_torch_thread):
    model = loading.load_causal_lm(tiny_model_dir)
    torch.manual_seed(0)
    examples = [(torch.randint(3, 200, (n,)).tolist(), torch.randint(3, 200, (m,)).tolist()) for n, m in
                [(5, 3), (2, 6), (7, 1)]]
    batch = collate(examples, 0)
    sums, counts, hits = completion_logps_and_hits(model, batch)

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    predicted = logits[:, :-1].argmax(-1) == batch["input_ids"][:, 1:]
    expected = (predicted & batch["loss_mask"][:, 1:].bool()).sum()
    assert hits.item() == expected.item()
    plain_sums, plain_counts = completion_logps(model, batch)
    assert torch.equal(counts, plain_counts) and torch.allclose(sums, plain_sums)


def test_supervised_steps_and_evaluations_report_token_accuracy(tiny_model_dir, one_torch_thread):
    model = loading.load_causal_lm(tiny_model_dir)
    pairs = [TokenizedPair([5, 6, 7], [8, 9, 2], []), TokenizedPair([5, 6], [11, 2], [])]
    sft = SFT(pairs, 0, eval_examples=pairs)
    _, stats, _ = sft.loss(model, [0, 1])
    assert 0.0 <= float(stats["token_accuracy"]) <= 1.0
    assert set(sft.evaluate(model)) == {"eval/loss", "eval/token_accuracy"}
