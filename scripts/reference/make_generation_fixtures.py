"""Golden generation outputs from Hugging Face transformers for tests/generation.rs.

Loads the crate's bundled tiny GPT-2 (data/tiny-gpt2) into `GPT2LMHeadModel` on the CPU in
float32 and writes tests/fixtures/generation.json:

- `greedy`: `generate(do_sample=False)` for several prompts, each with the exact keyword
  arguments used (max_new_tokens, max_length that counts the prompt, an eos_token_id that
  stops generation early, a batch of identical rows, num_return_sequences with top_k=1);
- `next_token`: chapter 3's single step on the tutorial prompt (shape of the logits, the first
  three logits of the last position, the most likely token and its probability, the top 10);
- `naive_loop`: the tutorial's loop that re-tokenizes the growing text, run here in Python.

transformers 5 changed generate's default length to the prompt plus 20 new tokens; the
tutorial (transformers 4) used max_length=20 *including* the prompt, so every case passes its
length explicitly.

Run from the repository root:  python scripts/reference/make_generation_fixtures.py
"""

import json

import torch
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

from reference_common import parse_root, provenance

FORMAT_VERSION = 1
COMMAND = "python scripts/reference/make_generation_fixtures.py"
EOS = 50256
TUTORIAL_PROMPT = "Hello, I'm a language model,"

# (name, prompt, generate kwargs, batch): `batch` > 1 repeats the prompt in input_ids.
CASES = [
    ("max_new_tokens_20", TUTORIAL_PROMPT, {"max_new_tokens": 20}, 1),
    ("max_length_20_counts_the_prompt", TUTORIAL_PROMPT, {"max_length": 20}, 1),
    ("max_length_22", "The quick brown fox jumps over the lazy dog.", {"max_length": 22}, 1),
    ("cjk_and_emoji", "こんにちは 🤗 means hello", {"max_new_tokens": 15}, 1),
    # The tiny model's greedy text after the tutorial prompt is ",,, Fou Fou ...": making
    # " Fou" (34296) the end-of-sequence token shows generation stopping early.
    ("eos_stops_early", TUTORIAL_PROMPT, {"max_length": 30, "eos_token_id": 34296}, 1),
    ("batch_of_identical_rows", "GPT-2 was trained on WebText", {"max_new_tokens": 12}, 3),
    # transformers refuses num_return_sequences > 1 with greedy search; sampling with top_k=1
    # is greedy, and it does accept that.
    (
        "num_return_sequences_top_k_1",
        TUTORIAL_PROMPT,
        {"max_length": 30, "num_return_sequences": 5, "do_sample": True, "top_k": 1},
        1,
    ),
]


def greedy_cases(model, tok):
    out = []
    for name, prompt, kwargs, batch in CASES:
        ids = tok(prompt, return_tensors="pt").input_ids.repeat(batch, 1)
        kw = {"do_sample": False, "pad_token_id": EOS, **kwargs}
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
            # Greedy decoding is only a fair test if no step is a near tie.
            steps = model(gen[:1]).logits[0, ids.shape[1] - 1 : -1]
            top2 = steps.topk(2, dim=-1).values
            margin = float((top2[:, 0] - top2[:, 1]).min())
        out.append(
            {
                "name": name,
                "prompt": prompt,
                "input_ids": ids[0].tolist(),
                "batch": batch,
                "generate_kwargs": kw,
                "sequences": gen.tolist(),
                "texts": [tok.decode(row) for row in gen],
                "min_margin": margin,
            }
        )
    return out


def next_token(model, tok):
    inputs = tok(TUTORIAL_PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    last = logits[0, -1]
    probs = torch.softmax(last, dim=-1)
    top = probs.topk(10)
    next_id = int(probs.argmax())
    return {
        "prompt": TUTORIAL_PROMPT,
        "input_ids": inputs.input_ids[0].tolist(),
        "attention_mask": inputs.attention_mask[0].tolist(),
        "logits_shape": list(logits.shape),
        "last_logits_first3": last[:3].tolist(),
        "next_token_id": next_id,
        "next_token_text": tok.decode(next_id),
        "next_token_prob": float(probs[next_id]),
        "top10_ids": top.indices.tolist(),
        "top10_probs": top.values.tolist(),
    }


def naive_loop(model, tok, prompt=TUTORIAL_PROMPT, max_new_tokens=20):
    """The tutorial's loop: re-tokenize the text and run the whole sequence every step."""
    text = prompt
    for _ in range(max_new_tokens):
        inputs = tok(text, return_tensors="pt")
        with torch.no_grad():
            next_id = int(model(**inputs).logits[0, -1].argmax())
        text += tok.decode(next_id)
        if next_id == EOS:
            break
    return {"prompt": prompt, "max_new_tokens": max_new_tokens, "text": text, "ids": tok(text).input_ids}


def main():
    root = parse_root(__doc__)
    model = GPT2LMHeadModel.from_pretrained(root / "data/tiny-gpt2", attn_implementation="eager").eval()
    tok = GPT2TokenizerFast(tokenizer_file=str(root / "data/gpt2-tokenizer/tokenizer.json"))
    meta = {
        **provenance(FORMAT_VERSION, COMMAND),
        "model": "data/tiny-gpt2",
        "greedy": greedy_cases(model, tok),
        "next_token": next_token(model, tok),
        "naive_loop": naive_loop(model, tok),
    }
    out = root / "tests/fixtures/generation.json"
    out.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(meta['greedy'])} generate cases to {out}")


if __name__ == "__main__":
    main()
