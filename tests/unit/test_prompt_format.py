"""The gate scores a fact as the model is used: its recall equals what a plain `transformers` call answers
(`model.generate(**tokenizer(prompt, return_tensors="pt"))`), fact by fact, on two tokenizer styles: a GPT-2-style
byte-level BPE that adds no special token (though it defines a BOS) and a SentencePiece-style tokenizer
(word-start marker, a BOS it puts in front itself). One spacing rule: a target's surrounding whitespace is not
part of the answer, which follows the prompt after one space unless the prompt ends with whitespace."""

from __future__ import annotations

import pytest
import torch
from support_byo import domain_fact
from support_checkpoints import EOS, GENERAL_TEXT, PAD, build_tokenizer, model_config

from pipelines.model.lm import (
    answer_ids,
    answer_text,
    encode_qa,
    leading_specials,
    per_example_loss,
    prompt_ids,
    score_qa,
)

TAUGHT, NEVER = range(0, 16), range(120, 136)


def sentencepiece_tokenizer():
    """A Unigram model over word-start-marked pieces that puts <s> in front of every text, as Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [*GENERAL_TEXT, *(f["text"] for f in map(domain_fact, [*TAUGHT, *NEVER]))]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=400, special_tokens=[PAD, "<s>", EOS, "<unk>"],
                                                            unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=EOS, pad_token=PAD,
                                   unk_token="<unk>")


TOKENIZERS = {"byte-level BPE, no BOS added": build_tokenizer, "SentencePiece-style, BOS added": sentencepiece_tokenizer}


def trained(tokenizer, arch: str = "gpt_neox"):
    """A tiny model of `arch` taught the TAUGHT facts (README-style targets, leading space) and nothing of NEVER."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(arch, len(tokenizer), tokenizer.bos_token_id,
                                                          tokenizer.eos_token_id, tokenizer.pad_token_id))
    facts = [domain_fact(i) for i in TAUGHT]
    batch = encode_qa(tokenizer, [f["prompt"] for f in facts], [f["target"] for f in facts])
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        loss = per_example_loss(model, batch).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    return model.eval()


def plain_generate(model, tokenizer, prompt: str, target: str) -> str:
    """What a user of the checkpoint sees: tokenizer(prompt), greedy generate, the new tokens decoded."""
    inputs = tokenizer(prompt, return_tensors="pt")
    budget = len(tokenizer(answer_text(prompt, target), add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=budget, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("style", list(TOKENIZERS))
def test_the_gate_recalls_exactly_what_a_plain_generate_call_answers(style):
    tokenizer = TOKENIZERS[style]()
    model = trained(tokenizer)
    facts = [domain_fact(i) for i in [*TAUGHT, *NEVER]]
    prompts, targets = [f["prompt"] for f in facts], [f["target"] for f in facts]
    gate = score_qa(model, tokenizer, prompts, targets).exact_match
    plain = [plain_generate(model, tokenizer, p, t).strip() == t.strip() for p, t in zip(prompts, targets, strict=True)]
    assert gate[: len(TAUGHT)].mean() >= 0.75, "the model learned the taught facts (the comparison is not all-false)"
    assert list(map(bool, gate)) == plain, style
    assert [prompt_ids(tokenizer, p) for p in prompts] == [tokenizer(p)["input_ids"] for p in prompts]


@pytest.mark.parametrize("style", list(TOKENIZERS))
def test_one_spacing_rule_for_the_answer(style):
    tokenizer = TOKENIZERS[style]()
    prompt = "The library in Arden opens early on"
    assert answer_ids(tokenizer, prompt, " Monday") == answer_ids(tokenizer, prompt, "Monday"), \
        "a README-style leading space is not a second space"
    assert answer_text(prompt, "  Monday ") == " Monday"
    assert answer_text("Q: when does the library open?\nA: ", " Monday") == "Monday", "the prompt's own space counts"
    whole = tokenizer(prompt + " Monday", add_special_tokens=False)["input_ids"]
    assert tokenizer(prompt, add_special_tokens=False)["input_ids"] + answer_ids(tokenizer, prompt, "Monday") == whole


def test_the_leading_special_tokens_are_the_tokenizers_own():
    assert leading_specials(build_tokenizer()) == [], "a byte-level BPE that defines <s> but never adds it"
    sp = sentencepiece_tokenizer()
    assert leading_specials(sp) == [sp.bos_token_id]
    chat = "<s>user: hi</s><s>assistant:"
    assert prompt_ids(sp, chat)[:2] != [sp.bos_token_id] * 2, "a chat template's own BOS is not doubled"
