"""What the reference scripts share, kept in one place so that the fixtures they write stay alike.

- for the fixture scripts: the `--root` option, the provenance keys every fixture opens with, the
  compact JSON writer and the parameter probe (chapter 6's and chapter 7's fixtures probe alike);
- for the two IMDB Trainer scripts (make_trainer_fixtures.py and bench_imdb_trainer.py): the
  tokenizer, the encoded rows, the dataset and the accuracy metric, so that the benchmark times
  the very setup the fixture pins.

The scripts run as files (`python scripts/reference/<script>.py`), which puts this folder on
sys.path, so they import it by its bare name.
"""

import argparse
import json
import pathlib
import re

import numpy as np
import torch
import transformers
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerFast

EOS = 50256
PROBE_COUNT = 8

# ---------------------------------------------------------------------------------------------
# Fixture scripts


def parse_root(doc):
    """The fixture scripts' one option, `--root` (default: the current directory)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path("."))
    return parser.parse_args().root


def provenance(format_version, command):
    """The keys a fixture opens with: the tests check `format_version` and `command` before reading
    on, and the versions say which torch and transformers the numbers are from."""
    return {
        "format_version": format_version,
        "command": command,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def probe(model, names):
    """A few values and the float64 sum of each named parameter: enough to pin what a training step
    did to it, small enough to commit."""
    params = dict(model.named_parameters())
    out = {}
    for name in names:
        flat = params[name].detach().reshape(-1)
        stride = flat.numel() // PROBE_COUNT
        idx = [i * stride for i in range(PROBE_COUNT)]
        out[name] = {
            "shape": list(params[name].shape),
            "first": flat[:PROBE_COUNT].tolist(),
            "stride": stride,
            "strided": flat[idx].tolist(),
            "sum_f64": float(flat.double().sum()),
        }
    return out


def dumps(obj):
    """Indented JSON with every list of numbers on a single line (keeps the file small)."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    scalar_list = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*|true|false|null)(?:,\s*(?:-?[0-9][0-9.eE+-]*|true|false|null))*)\s*\]")
    return scalar_list.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


# ---------------------------------------------------------------------------------------------
# The IMDB Trainer scripts


def pad_eos_tokenizer(path):
    """The tokenizer as the tutorial sets it up: pad = eos = <|endoftext|>, padding on the right."""
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    tok.eos_token = "<|endoftext|>"
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == EOS and tok.eos_token_id == EOS
    assert tok.padding_side == "right"
    return tok


def encode(tok, texts, labels, padding, max_length):
    """The Trainer's rows; "longest" leaves them unpadded for DataCollatorWithPadding to pad per batch."""
    if padding == "max_length":
        enc = tok(texts, truncation=True, padding="max_length", max_length=max_length)
    else:
        enc = tok(texts, truncation=True, max_length=max_length)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], labels)
    ]


class ListDataset(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def compute_metrics(eval_pred):
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean())}
