"""Golden values from Hugging Face transformers for the Rust tests.

Loads the crate's bundled tiny GPT-2 (data/tiny-gpt2, written by the crate itself) into
`GPT2LMHeadModel` on the CPU in float32 and writes:

- tests/fixtures/core.safetensors: tensors (logits, hidden states, ...)
- tests/fixtures/core.json: scalars, token ids and provenance
- tests/fixtures/hf-written/: a small checkpoint saved by transformers' `save_pretrained`,
  which the Rust side must load.

Run from the repository root:  python scripts/reference/make_fixtures.py
"""

import json
import pathlib
import sys

import numpy as np
import safetensors.torch
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from reference_common import parse_root, provenance

FORMAT_VERSION = 1
COMMAND = "python scripts/reference/make_fixtures.py"

PROMPTS = [
    "Hello, I'm a language model,",
    "The quick brown fox jumps over the lazy dog.",
    "GPT-2 was trained on WebText, 40GB of text from outbound Reddit links.",
]
GREEDY_NEW_TOKENS = 20


def load_model(model_dir: pathlib.Path) -> GPT2LMHeadModel:
    model, info = GPT2LMHeadModel.from_pretrained(
        model_dir, output_loading_info=True, attn_implementation="eager"
    )
    bad = {k: v for k, v in info.items() if v and k != "mismatched_keys" or (k == "mismatched_keys" and v)}
    if bad:
        sys.exit(f"the crate-written checkpoint does not load cleanly in transformers: {bad}")
    return model.eval(), info


def tokenizer(root: pathlib.Path) -> GPT2TokenizerFast:
    return GPT2TokenizerFast(tokenizer_file=str(root / "data/gpt2-tokenizer/tokenizer.json"))


def core(model, tok, tensors, meta):
    meta["prompts"] = []
    for i, prompt in enumerate(PROMPTS):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model(ids, labels=ids, output_hidden_states=True)
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=GREEDY_NEW_TOKENS,
                pad_token_id=model.config.eos_token_id,
            )
            # Greedy decoding is only a fair test if no step is a near tie.
            steps = model(gen).logits[0, ids.shape[1] - 1 : -1]
            top2 = steps.topk(2, dim=-1).values
            margin = float((top2[:, 0] - top2[:, 1]).min())
        tensors[f"prompt{i}.logits"] = out.logits[0].contiguous()
        if i == 0:
            # The ladder: embeddings, each block's output, the final LayerNorm.
            for layer, h in enumerate(out.hidden_states):
                tensors[f"prompt{i}.hidden_states.{layer}"] = h[0].contiguous()
        meta["prompts"].append(
            {
                "text": prompt,
                "input_ids": ids[0].tolist(),
                "loss": float(out.loss),
                "greedy_ids": gen[0].tolist(),
                "greedy_text": tok.decode(gen[0]),
                "greedy_min_margin": margin,
            }
        )


def hf_written(root: pathlib.Path, out_dir: pathlib.Path, tensors, meta):
    """A checkpoint saved by transformers itself, small enough to commit."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=999, eos_token_id=999)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(out_dir)
    ids = torch.tensor([[1, 5, 42, 7, 999, 0, 3]])
    with torch.no_grad():
        tensors["hf_written.logits"] = model(ids).logits[0].contiguous()
    meta["hf_written"] = {"input_ids": ids[0].tolist()}


def main():
    root = parse_root(__doc__)
    fixtures = root / "tests/fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    model, info = load_model(root / "data/tiny-gpt2")
    tok = tokenizer(root)
    tensors, meta = {}, {
        **provenance(FORMAT_VERSION, COMMAND),
        "model": "data/tiny-gpt2",
        "loading_info": {k: sorted(v) if isinstance(v, (list, set)) else str(v) for k, v in info.items()},
    }
    core(model, tok, tensors, meta)
    hf_written(root, fixtures / "hf-written", tensors, meta)

    safetensors.torch.save_file(tensors, fixtures / "core.safetensors", metadata={"format": "pt"})
    (fixtures / "core.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(tensors)} tensors to {fixtures}/core.safetensors and core.json")


if __name__ == "__main__":
    main()
