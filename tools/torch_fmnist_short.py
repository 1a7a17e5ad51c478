"""PyTorch's side of issue 17's f32 target: fmnist_resnet8 trained in PyTorch
with the short recipe that `reproduce_tables --recipe=short` gives Quanta, so
"f32 at least PyTorch's on the same recipe" is measured by a program here.

The same model (models/resnet.cc: a 32-channel 3x3 stem and three basic blocks
of 32, 64, 128 channels, torchvision's Kaiming-normal fan-out init for the
convolutions, PyTorch's default Linear init), the same data (Debian's
dataset-fashion-mnist, normalized by 0.2860 / 0.3530 after a zero-padded
2-pixel random crop and a horizontal flip, batch 128, the last partial batch
dropped) and the same optimization (SGD momentum 0.9 Nesterov, lr 0.1 cosine to
0 per step without warm-up, weight decay 5e-4 on every parameter, 6 epochs).
Top-1 is the eval-mode model on all 10,000 test images.

    /opt/torchref/bin/python tools/torch_fmnist_short.py --seeds=0,1,2 \\
        --write=docs/accuracy_torch_short.md

Not part of the build; needs torch (any recent release) and numpy.
"""
import argparse
import gzip
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The residual block and the CPU's name, as the other PyTorch tools have them
# (this folder is on sys.path when the script runs).
from compare_torch import cpu_name
from torch_resnet18_step import Block

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class FmnistResNet8(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.layers = nn.Sequential(Block(32, 32, 1), Block(32, 64, 2), Block(64, 128, 2))
        self.fc = nn.Linear(128, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        y = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(y.mean((2, 3)))


def augment(images, gen):
    """Zero-pad by 2, crop 28x28 at a random place, flip half; images in [0, 1]."""
    n = images.shape[0]
    padded = F.pad(images, (2, 2, 2, 2))
    top = torch.randint(0, 5, (n,), generator=gen)
    left = torch.randint(0, 5, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        crop = padded[i, :, top[i]:top[i] + 28, left[i]:left[i] + 28]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def run(seed, epochs, log):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_x = torch.from_numpy(read_idx(f"{DATA}/train-images-idx3-ubyte.gz").copy()).float().div_(255).unsqueeze(1)
    train_y = torch.from_numpy(read_idx(f"{DATA}/train-labels-idx1-ubyte.gz").astype(np.int64))
    test_x = torch.from_numpy(read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz").copy()).float().div_(255).unsqueeze(1)
    test_y = torch.from_numpy(read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    test_x = ((test_x - MEAN) / STD).contiguous(memory_format=torch.channels_last)

    model = FmnistResNet8().to(memory_format=torch.channels_last)
    batch = 128
    steps_per_epoch = train_x.shape[0] // batch  # the last partial batch dropped, as Quanta's loader does
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.time()
        order = torch.randperm(train_x.shape[0], generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        for s in range(steps_per_epoch):
            idx = order[s * batch:(s + 1) * batch]
            x = ((augment(train_x[idx], gen) - MEAN) / STD).contiguous(memory_format=torch.channels_last)
            y = train_y[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.numel()
        model.eval()
        with torch.no_grad():
            test_correct = sum((model(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum().item()
                               for i in range(0, test_x.shape[0], 1000))
        history.append((loss_sum / seen, correct / seen, test_correct / test_x.shape[0]))
        print(f"seed {seed} epoch {epoch}/{epochs}: train loss {loss_sum / seen:.4f} acc {100 * correct / seen:.2f}% | "
              f"test acc {100 * test_correct / test_x.shape[0]:.2f}% | {time.time() - start:.1f} s", file=log,
              flush=True)
    return history


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--write", default="", help="write the table (markdown) here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",")]
    start = time.time()
    results = {s: run(s, a.epochs, sys.stdout) for s in seeds}
    minutes = (time.time() - start) / 60
    top1 = [100 * results[s][-1][2] for s in seeds]
    mean = statistics.mean(top1)
    std = statistics.stdev(top1) if len(top1) > 1 else 0.0
    print(f"test top-1 per seed: {', '.join(f'{t:.2f}%' for t in top1)}; mean {mean:.2f} +- {std:.2f}")
    if a.write:
        rows = []
        for s in seeds:
            for e, (loss, acc, test) in enumerate(results[s], 1):
                rows.append(f"| {s} | {e} | {loss:.4f} | {100 * acc:.2f}% | {100 * test:.2f}% |")
        text = (
            "# fmnist_resnet8 in PyTorch, the short recipe\n\n"
            f"Written by `python3 tools/torch_fmnist_short.py --seeds={a.seeds} --epochs={a.epochs} "
            f"--write={a.write}` with PyTorch {torch.__version__} on {cpu_name()}, {a.threads} threads, in "
            f"{minutes:.0f} min: the model, data and schedule of `reproduce_tables --recipe=short`'s f32 row "
            "(the script's docstring lists them), trained by PyTorch, for issue 17's target \"f32 at least "
            "PyTorch's on the same recipe\".\n\n"
            f"Test top-1 after the last epoch, per seed: {', '.join(f'{t:.2f}%' for t in top1)}; "
            f"**mean {mean:.2f} +- {std:.2f}** (sample std).\n\n"
            "| seed | epoch | train loss | train acc | test top-1 |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
        tmp = a.write + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, a.write)


if __name__ == "__main__":
    main()
