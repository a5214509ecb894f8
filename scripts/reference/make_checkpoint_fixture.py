"""Does transformers open what the Rust training loop saves, and compute the same logits?

Runs `examples/06_jokes_finetune.rs` for two optimizer steps (fixed recipe, small sequences,
file order) into a temporary directory, opens its `checkpoint-2/` with
`GPT2LMHeadModel.from_pretrained`, and records the logits and loss of the tutorial's prompt in
`tests/fixtures/checkpoint.json`. `tests/jokes.rs` trains the same two steps, loads the same
checkpoint with the crate, and compares. Needs cargo and the packages of requirements.txt.

    python scripts/reference/make_checkpoint_fixture.py
"""

import json
import subprocess
import tempfile
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from reference_common import provenance

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "checkpoint.json"
ARGS = ["--quiet", "--device", "cpu", "--max-steps", "2", "--max-seq-len", "48",
        "--accumulate", "2", "--no-shuffle"]
PROMPT_IDS = [15496, 11, 314, 1101, 257, 3303, 2746, 11]  # "Hello, I'm a language model,"


def main():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["cargo", "run", "--release", "--example", "06_jokes_finetune", "--", *ARGS,
             "--out", tmp],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        model = GPT2LMHeadModel.from_pretrained(Path(tmp) / "checkpoint-2").eval()
        ids = torch.tensor([PROMPT_IDS])
        with torch.no_grad():
            out = model(ids, labels=ids)
    logits = out.logits[0]
    fixture = {
        **provenance(1, "python scripts/reference/make_checkpoint_fixture.py"),
        "example_args": ARGS,
        "checkpoint": "checkpoint-2",
        "input_ids": PROMPT_IDS,
        "loss": out.loss.item(),
        "last_logits_first16": logits[-1, :16].tolist(),
        "argmax": logits.argmax(-1).tolist(),
        "logsumexp": torch.logsumexp(logits, -1).tolist(),
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
