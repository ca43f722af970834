"""A one-layer GPT-2 over a word-level vocabulary, trained until it recites given facts: the selection tests'
model, whose knowledge is known exactly."""

from __future__ import annotations

import torch


def word_lm(train_rows: list[dict], texts: list[str]):
    """A one-layer GPT-2 over a word-level vocabulary, trained until it recites `train_rows`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from pipelines.model.lm import encode_qa, per_example_loss, score_qa

    words = sorted({w for t in texts for w in t.split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "[UNK]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="[UNK]"
    )
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = encode_qa(tokenizer, [r["prompt"] for r in train_rows], [r["target"] for r in train_rows])
    prompts, targets = [r["prompt"] for r in train_rows], [r["target"] for r in train_rows]
    for step in range(400):  # until every fact is recited with a per-token NLL below 0.3
        if step % 10 == 0:
            scores = score_qa(model, tokenizer, prompts, targets)
            if scores.exact_match.all() and (-scores.mean_logprob).max() < 0.3:
                break
        model.train()
        loss = per_example_loss(model, batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, tokenizer
