#!/usr/bin/env python3
"""Writes tests/models/testdata/bert_golden.safetensors: a small BERT sequence
classifier in PyTorch, written the way Hugging Face's BertForSequenceClassification
computes it (post-LN blocks, exact GELU, the (1 - mask) * -10000 additive
attention mask, tanh pooler; dropout off), with every parameter under its
transformers name, a padded input batch, the outputs (sequence, pooled, logits),
the cross-entropy loss and the gradient of the loss with respect to every
parameter ("grad.<name>"). tests/models/bert_test.cc compares every tensor. CI
reads the committed file; it never runs this script.

Regenerate (Debian's python3-torch): /usr/bin/python3 tools/gen_bert_golden.py
"""
import json
import math
import os
import struct

import torch

torch.manual_seed(0)
V, H, L, NH, FF, P, TV, LABELS = 40, 32, 2, 4, 64, 16, 2, 3
EPS = 1e-12
B, T = 3, 7


def param(*shape, std=0.2):
    return (torch.randn(*shape, dtype=torch.float64) * std).requires_grad_()


params = {
    "bert.embeddings.word_embeddings.weight": param(V, H),
    "bert.embeddings.position_embeddings.weight": param(P, H),
    "bert.embeddings.token_type_embeddings.weight": param(TV, H),
    "bert.embeddings.LayerNorm.weight": (1 + 0.1 * torch.randn(H, dtype=torch.float64)).requires_grad_(),
    "bert.embeddings.LayerNorm.bias": param(H, std=0.1),
}
for i in range(L):
    pre = "bert.encoder.layer.%d." % i
    for name, (o, n) in {
        "attention.self.query": (H, H),
        "attention.self.key": (H, H),
        "attention.self.value": (H, H),
        "attention.output.dense": (H, H),
        "intermediate.dense": (FF, H),
        "output.dense": (H, FF),
    }.items():
        params[pre + name + ".weight"] = param(o, n, std=1 / math.sqrt(n))
        params[pre + name + ".bias"] = param(o, std=0.1)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        params[pre + ln + ".weight"] = (1 + 0.1 * torch.randn(H, dtype=torch.float64)).requires_grad_()
        params[pre + ln + ".bias"] = param(H, std=0.1)
params["bert.pooler.dense.weight"] = param(H, H, std=1 / math.sqrt(H))
params["bert.pooler.dense.bias"] = param(H, std=0.1)
params["classifier.weight"] = param(LABELS, H, std=1 / math.sqrt(H))
params["classifier.bias"] = param(LABELS, std=0.1)

# Three examples: full length, padded after 4 tokens, a sentence pair padded after 6.
ids = torch.tensor([[2, 11, 12, 13, 14, 15, 3], [2, 20, 21, 3, 0, 0, 0], [2, 30, 31, 3, 32, 3, 0]])
type_ids = torch.tensor([[0] * 7, [0] * 7, [0, 0, 0, 0, 1, 1, 0]])
mask = torch.tensor([[1] * 7, [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]])
labels = torch.tensor([2, 0, 1])


def linear(x, name):
    return x @ params[name + ".weight"].T + params[name + ".bias"]


def layer_norm(x, name):
    return torch.nn.functional.layer_norm(x, (H,), params[name + ".weight"], params[name + ".bias"], EPS)


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def bert(ids, type_ids, mask):
    p = "bert.embeddings."
    x = (params[p + "word_embeddings.weight"][ids] + params[p + "position_embeddings.weight"][torch.arange(T)]
         + params[p + "token_type_embeddings.weight"][type_ids])
    x = layer_norm(x, p + "LayerNorm")
    additive = (1.0 - mask.to(torch.float64))[:, None, None, :] * -10000.0  # (B, 1, 1, T)
    d = H // NH
    for i in range(L):
        pre = "bert.encoder.layer.%d." % i
        def heads(t):
            return t.view(B, T, NH, d).transpose(1, 2)  # (B, NH, T, d)
        q, k, v = (heads(linear(x, pre + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + additive
        ctx = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, H)
        x = layer_norm(linear(ctx, pre + "attention.output.dense") + x, pre + "attention.output.LayerNorm")
        ff = linear(gelu(linear(x, pre + "intermediate.dense")), pre + "output.dense")
        x = layer_norm(ff + x, pre + "output.LayerNorm")
    pooled = torch.tanh(linear(x[:, 0], "bert.pooler.dense"))
    return x, pooled, linear(pooled, "classifier")


sequence, pooled, logits = bert(ids, type_ids, mask)
loss = torch.nn.functional.cross_entropy(logits, labels)
loss.backward()

tensors = {name: p.detach().to(torch.float32) for name, p in params.items()}
tensors.update({"grad." + name: p.grad.to(torch.float32) for name, p in params.items()})
tensors.update({
    "input.ids": ids, "input.type_ids": type_ids, "input.mask": mask, "input.labels": labels,
    "output.sequence": sequence.detach().float(), "output.pooled": pooled.detach().float(),
    "output.logits": logits.detach().float(), "output.loss": loss.detach().float().reshape(1),
})


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"generator": "tools/gen_bert_golden.py", "torch": torch.__version__,
                              "config": json.dumps({"vocab": V, "hidden": H, "layers": L, "heads": NH,
                                                    "intermediate": FF, "positions": P, "labels": LABELS})}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


out = os.path.join(os.path.dirname(__file__), "..", "tests", "models", "testdata", "bert_golden.safetensors")
os.makedirs(os.path.dirname(out), exist_ok=True)
save_safetensors(out, tensors)
print("wrote", os.path.normpath(out), "loss %.6f" % loss.item())
