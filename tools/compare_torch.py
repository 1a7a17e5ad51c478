#!/usr/bin/env python3
"""Quanta against the PyTorch installed on this machine, side by side, in one run.

    bazel build //apps:bench_nn //apps:bench_infer //apps:bench_bert //apps:bench_quant //apps:bench_core
    python3 tools/compare_torch.py                          # the table on stdout
    python3 tools/compare_torch.py --write=docs/benchmarks.md

Runs the same models in both, interleaved (Quanta's benchmark programs, then
PyTorch in this process, round after round), and reports each figure as the
median over rounds with the ratio Quanta / PyTorch:
  - ResNet-20 (CIFAR, 100 classes) f32 training step, batch 128, SGD momentum,
    images/s at 1 and 2 threads (//apps:bench_nn, channels-last by default,
    against the same network in PyTorch: option-A shortcuts, no biases before
    batch norm, run in both memory formats, NCHW and channels_last, eager and
    under torch.compile where the PyTorch has it (--no_compile: eager only);
    the fastest is kept and named);
  - ResNet-20 int8 inference, batch 64 (images/s) and batch 1 (ms), and
    torchvision's ResNet-50 int8 at batch 1 (ms) (//apps:bench_infer against
    PyTorch's FX graph-mode static quantization, per-channel weights, run eager
    and as frozen TorchScript on each quantized engine it has; the best is kept);
  - BERT-base, sequence 128, batch 1, int8 (ms) (//apps:bench_bert against
    transformers' BertModel with torch.ao.quantization.quantize_dynamic), when
    transformers is installed; on CPUs without VNNI also with Quanta's
    activations at 7 bits, as PyTorch's dynamic Linear quantizes them
    (reduce_range=True), where 8-bit ones make Quanta split its weights;
  - f32 GEMM 1024^3 (GFLOP/s, bench_infer's GEMM against torch.matmul);
  - Quanta's QAT step against its f32 step (//apps:bench_quant; no PyTorch
    figure);
  - the int8 rows against the machine's int8 ceiling: //apps:bench_core's
    measured vpdpbusd peak (without VNNI: the vpmaddubsw sequence's rate, and
    the rate exact 8-bit products can reach), and the multiply-accumulates
    bench_infer prints (IntegerModel::MultiplyAdds of the converted model),
    beside Quanta's int8 matmul 1024^3 (bench_core's BM_MatmulInt8_1024) on
    the same scale;
  - whether PyTorch's int8 convolution is exact on this CPU, per engine (a
    probe that makes pairs of products overflow int16: torch_int8_probe).
With --also_torch=PYTHON, the PyTorch of another interpreter (Debian's
python3-torch under /usr/bin/python3, say, beside a current release from PyPI
in the interpreter running this) is measured in the same rounds, each of its
parts right after this process's (it runs this file with --torch_part and
hands back JSON), and gets a second table and probe line.
With --write, the table replaces the part of that file between the markers
<!-- compare_torch:begin --> and <!-- compare_torch:end --> (written to a
temporary file, then renamed). Not used by CI; run it on an idle machine.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time


def cpu_flags():
    """The CPU's feature flags (/proc/cpuinfo), empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = re.search(r"^flags\s*:(.*)$", f.read(), re.M)
        return set(flags.group(1).split()) if flags else set()
    except OSError:
        return set()


def has_vnni():
    """Whether the CPU multiplies int8 with VNNI (vpdpbusd), 512-bit or 256-bit."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
            else:
                name = platform.processor() or "unknown CPU"
        with open("/proc/cpuinfo") as f:
            text = f.read()
        fam = re.search(r"^cpu family\s*:\s*(\d+)", text, re.M)
        model = re.search(r"^model\s*:\s*(\d+)", text, re.M)
        f = cpu_flags()
        isa = [x for x in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if x in f]
        extra = f"family {fam.group(1)} model {model.group(1)}" if fam and model else ""
        return f"{name} ({extra}; {', '.join(isa) or 'no AVX-512'}), {os.cpu_count()} cores"
    except OSError:
        return platform.processor() or "unknown CPU"


# ---- Quanta: the benchmark programs, their figures read from their output ------

def run_bin(path, *args):
    r = subprocess.run([path, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {os.path.basename(path)} {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def quanta_train(bin_dir, steps):
    out = run_bin(os.path.join(bin_dir, "apps/bench_nn"), f"--steps={steps}")
    figs = {}
    for t, ips in re.findall(r"threads=(\d+)\s+median step [\d.]+ s\s+([\d.]+) images/s", out):
        figs[int(t)] = float(ips)
    return figs


def quanta_infer(bin_dir, only, runs, abits=8):
    out = run_bin(os.path.join(bin_dir, "apps/bench_infer"), f"--only={only}", f"--runs={runs}", f"--abits={abits}")
    figs = {}
    for line in out.splitlines():
        m = re.search(r"threads=(\d+)\s+f32\s+([\d.]+) ms\s+([\d.]+) img/s \| f32 folded\s+([\d.]+) ms\s+([\d.]+) img/s"
                      r" \| int8\s+([\d.]+) ms\s+([\d.]+) img/s", line)
        if m:
            t = int(m.group(1))
            figs[t] = {"folded_ms": float(m.group(4)), "int8_ms": float(m.group(6)), "int8_ips": float(m.group(7))}
    # The integer model's own count (IntegerModel::MultiplyAdds: convolutions and linear layers).
    macs = re.search(r"\(([\d.]+) M multiply-adds an image\)", out)
    for f in figs.values():
        f["macs"] = float(macs.group(1)) * 1e6 if macs else None
    return figs


def quanta_gemm(bin_dir, runs):
    out = run_bin(os.path.join(bin_dir, "apps/bench_infer"), "--only=gemm", f"--runs={runs}")
    return {int(t): float(g) for t, g in re.findall(r"threads=(\d+)\s+f32 ([\d.]+) GFLOP/s", out)}


def quanta_bert(bin_dir, runs, abits=8):
    out = run_bin(os.path.join(bin_dir, "apps/bench_bert"), f"--runs={runs}", f"--abits={abits}")
    figs = {}
    for b, t, f32, int8, dyn in re.findall(r"^(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+x\s+([\d.]+)", out, re.M):
        figs[(int(b), int(t))] = {"int8_ms": float(int8), "dyn_ms": float(dyn)}
    return figs


def quanta_int8_peak(bin_dir):
    """bench_core's measured int8 multiply-accumulate peaks, GMAC/s by (benchmark, thread count): BM_Int8Peak
    (vpdpbusd, or without VNNI the vpmaddubsw sequence) and, without VNNI only, BM_Int8ExactPeak (vpmaddwd on
    16-bit operands)."""
    out = run_bin(os.path.join(bin_dir, "apps/bench_core"), "--benchmark_filter=Int8(Exact)?Peak|MatmulInt8_1024")
    peaks = {(name, int(t)): float(g)
             for name, t, g in re.findall(r"BM_(Int8Peak|Int8ExactPeak)/(\d+)\S*\s.*?GMAC/s=([\d.]+)", out)}
    # oneDNN's int8 GEMM 1024^3 in GOP/s (two operations a multiply-accumulate), as GMAC/s.
    peaks.update({("MatmulInt8", int(t)): float(g) / 2
                  for t, g in re.findall(r"BM_MatmulInt8_1024/(\d+)\S*\s.*?GOP/s=([\d.]+)G", out)})
    return peaks


def quanta_qat(bin_dir, steps):
    out = run_bin(os.path.join(bin_dir, "apps/bench_quant"), f"--steps={steps}", "--compare=false")
    return {name.strip(): float(x) for name, x in re.findall(r"QAT (default [^\n]*?)\s+[\d.]+ s\s+= ([\d.]+)x f32", out)}


# ---- PyTorch: the same networks ------------------------------------------------

def torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu2 = nn.ReLU()
            self.pad = cout - cin
            self.stride = stride

        def forward(self, x):
            y = self.relu1(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            s = x
            if self.stride != 1 or self.pad:  # option A: subsample, pad channels with zeros
                s = x[:, :, :: self.stride, :: self.stride]
                s = F.pad(s, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return self.relu2(y + s)

    class CifarResNet(nn.Module):
        def __init__(self, depth=20, classes=100):
            super().__init__()
            n = (depth - 2) // 6
            self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.relu = nn.ReLU()
            layers, cin = [], 16
            for i, c in enumerate((16, 32, 64)):
                for j in range(n):
                    layers.append(Block(cin, c, 2 if i > 0 and j == 0 else 1))
                    cin = c
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, classes)

        def forward(self, x):
            x = self.layers(self.relu(self.bn(self.conv(x))))
            return self.fc(torch.flatten(self.pool(x), 1))

    return CifarResNet


def median_seconds(fn, runs):
    fn()
    s = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        s.append(time.perf_counter() - t)
    return statistics.median(s)


_compiled = {}  # (memory format, threads) -> torch.compile's training step, compiled once a process


def torch_train(threads, steps, compiled_too=True):
    """PyTorch's best training speed (images/s) over its two memory formats, NCHW and channels_last, eager and (a
    PyTorch that has it, compiled_too) under torch.compile, and which variant that was."""
    import torch
    torch.set_num_threads(threads)
    best = None
    formats = (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last))
    variants = [(name, fmt, False) for name, fmt in formats]
    if compiled_too and hasattr(torch, "compile"):
        variants += [(name, fmt, True) for name, fmt in formats]
    for name, fmt, compiled in variants:
        step = _compiled.get((name, threads)) if compiled else None
        if step is None:
            torch.manual_seed(0)
            net = torch_models()().to(memory_format=fmt)
            net.train()
            model = torch.compile(net) if compiled else net
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            x = torch.randn(128, 3, 32, 32).contiguous(memory_format=fmt)
            y = torch.tensor([(i * 37) % 100 for i in range(128)])
            loss_fn = torch.nn.CrossEntropyLoss()

            def step(model=model, opt=opt, x=x, y=y, loss_fn=loss_fn):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()

            if compiled:
                try:
                    step()  # compiles forward and backward (minutes), outside the timed runs of every round
                except Exception as e:  # noqa: BLE001 - a variant that cannot be compiled is left out, and said so
                    print(f"  (PyTorch torch.compile training, {name}: {type(e).__name__}: {str(e)[:160]})",
                          file=sys.stderr)
                    continue
                _compiled[(name, threads)] = step
        ips = 128 / median_seconds(step, steps)
        if best is None or ips > best[0]:
            best = (ips, ("torch.compile " if compiled else "") + name)
    return best


def torch_int8_variants(make, shape):
    """PyTorch's static int8 (FX graph mode) on each quantized engine, eager and frozen TorchScript."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    variants = []
    for engine in ("x86", "onednn", "fbgemm"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine
        net = make().eval()
        x = torch.randn(*shape)
        prepared = prepare_fx(net, get_default_qconfig_mapping(engine), example_inputs=(x,))
        with torch.no_grad():
            prepared(x)
            q = convert_fx(prepared)
            variants.append((f"{engine} eager", engine, q))
            try:
                scripted = torch.jit.freeze(torch.jit.trace(q, x).eval())
                variants.append((f"{engine} TorchScript frozen", engine, scripted))
            except Exception as e:  # noqa: BLE001 - a variant that cannot be scripted is left out, and said so
                print(f"  (PyTorch {engine} TorchScript: {type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
    return variants


def torch_int8_probe():
    """Whether PyTorch's int8 convolution is exact on this CPU, per quantized engine: the largest error, in output
    steps, of a quantized 3x3 Conv2d (64 input channels) on 8-bit activations of 200 to 255 and weights of +-127
    (neighbouring input channels of one sign, so a pair of products reaches 2 * 255 * 127, past int16), against the
    same sum in float64; rounding alone gives at most 0.5. Also whether the engine's default static qconfig keeps
    activations at 8 bits (reduce_range=False) or 7. {engine: (error, activation bits)}."""
    import warnings

    import torch
    from torch.ao.quantization import get_default_qconfig
    found = {}
    with warnings.catch_warnings():  # quantized tensor creation is deprecated in PyTorch 2.x
        warnings.simplefilter("ignore")
        for engine in ("x86", "onednn", "fbgemm", "qnnpack"):
            if engine not in torch.backends.quantized.supported_engines:
                continue
            torch.backends.quantized.engine = engine
            x = torch.full((1, 64, 8, 8), 255.0)
            x[:, ::3] = 200.0
            w = torch.full((16, 64, 3, 3), 127.0)
            w[1::2] = -127.0
            conv = torch.ao.nn.quantized.Conv2d(64, 16, 3, padding=1)
            conv.set_weight_bias(torch.quantize_per_channel(w, torch.ones(16), torch.zeros(16, dtype=torch.long), 0,
                                                            torch.qint8), None)
            exact = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
            conv.scale, conv.zero_point = float(exact.abs().max()) / 100, 128  # no output clipping
            y = conv(torch.quantize_per_tensor(x, 1.0, 0, torch.quint8)).dequantize().double()
            bits = 7 if getattr(get_default_qconfig(engine).activation(), "reduce_range", False) else 8
            found[engine] = ((y - exact).abs().max().item() / conv.scale, bits)
    return found


def probe_line(found, subject="PyTorch's int8 convolution"):
    if not found:
        return []
    parts = [f"{e} {err:.1f} (default qconfig: {bits}-bit activations)" for e, (err, bits) in found.items()]
    inexact = [e for e, (err, _) in found.items() if err > 0.5 + 1e-6]
    by_default = [e for e in inexact if found[e][1] == 8]
    verdict = ("exact on every engine" if not inexact else
               f"{', '.join(inexact)} not exact with 8-bit activations (a pair of products saturates in int16)" +
               (f"; {', '.join(by_default)} quantize{'s' if len(by_default) == 1 else ''} activations to 8 bits by "
                "default, so a model it runs is not exactly the model that was calibrated or trained" if by_default
                else "; their default qconfigs keep activations at 7 bits, where no pair overflows"))
    return ["", f"{subject} on this CPU (`torch_int8_probe` in this program: a 3x3 Conv2d, 64 input "
            "channels, 8-bit activations 200-255, weights +-127), its largest error in output steps against float64 "
            "(rounding alone: at most 0.5): " + "; ".join(parts) + f". So: {verdict}."]


def torch_int8(make, shape, threads, runs):
    """Best (lowest) latency in seconds over PyTorch's int8 variants, and which one."""
    import torch
    torch.set_num_threads(threads)
    x = torch.randn(*shape)
    best = None
    for name, engine, model in torch_int8_variants(make, shape):
        torch.backends.quantized.engine = engine
        with torch.no_grad():
            s = median_seconds(lambda: model(x), runs)
        if best is None or s < best[0]:
            best = (s, name)
    return best


def torch_gemm(threads, runs):
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024 ** 3 / median_seconds(lambda: a @ b, runs) / 1e9


def torch_bert(threads, runs):
    import torch
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()  # bert-base: 12 layers, hidden 768, 12 heads
    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    ids = torch.randint(1000, 29000, (1, 128))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        return median_seconds(lambda: q(input_ids=ids, attention_mask=mask), runs)


def cases(args):
    """The inference cases, in bench_infer's names."""
    return ["resnet20_b64", "resnet20_b1"] + ([] if args.skip_resnet50 else ["resnet50"])


def torch_figures(part, args):
    """One part of a round on PyTorch's side: [(key, value, note)], keys as the table's rows. Parts: train, an
    inference case (cases()), gemm, bert."""
    import torch
    out = []
    if part == "train":
        for t in (1, 2):
            ips, name = torch_train(t, args.steps, not args.no_compile)
            out.append((("train", t), ips, name))
    elif part in cases(args):
        CifarResNet = torch_models()
        if part == "resnet50":
            import torchvision
            make, shape = (lambda: torchvision.models.resnet50(weights=None)), (1, 3, 224, 224)
        else:
            make, shape = (lambda: CifarResNet(20, 100)), (64 if part == "resnet20_b64" else 1, 3, 32, 32)
        for t in (1, 2):
            s, name = torch_int8(make, shape, t, args.runs)
            out.append(((part, t), shape[0] / s if part == "resnet20_b64" else 1e3 * s, name))
    elif part == "gemm":
        for t in (1, 2):
            out.append((("gemm", t), torch_gemm(t, args.runs), None))
    elif part == "bert":
        tb = torch_bert(2, max(3, args.runs // 2))
        if tb is not None:
            out.append((("bert", 2), 1e3 * tb, None))
    else:
        raise ValueError(f"no part {part!r}")
    torch.set_num_threads(os.cpu_count() or 1)
    return out


def torch_describe():
    """This interpreter's PyTorch: version, quantized engines, whether it is Debian's package, and for Debian's the
    BLAS its matmul calls (Debian's libblas.so.3 alternative: the reference BLAS unless an optimized one, such as
    libopenblas0-pthread, is installed; PyPI's wheels carry MKL or OpenBLAS inside)."""
    import torch
    debian = torch.__file__.startswith("/usr/lib/python3/dist-packages/")
    blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3") if debian else None
    package = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"], capture_output=True,
                             text=True).stdout.strip() if debian else ""
    return {"version": torch.__version__, "package": package,
            "engines": list(torch.backends.quantized.supported_engines), "debian": debian, "blas": blas,
            "python": sys.executable}


def torch_in(python, part, args):
    """Runs one part in another Python's PyTorch (--also_torch): this file with --torch_part, figures as JSON."""
    cmd = [python, os.path.abspath(__file__), f"--torch_part={part}", f"--runs={args.runs}", f"--steps={args.steps}"]
    cmd += [f for f, on in (("--skip_resnet50", args.skip_resnet50), ("--no_compile", args.no_compile)) if on]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- the table -----------------------------------------------------------------

def fmt(v):
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def spread(values):
    m = statistics.median(values)
    return fmt(m) if len(values) == 1 else f"{fmt(m)} ({fmt(min(values))}-{fmt(max(values))})"


def ceiling_lines(rows, macs):
    """The int8 rows against the machine's int8 ceiling: what each side reaches and what the targets would need."""
    peaks = {t: statistics.median(rows[("int8_peak", t)]["q"]) for t in (1, 2) if rows.get(("int8_peak", t), {}).get("q")}
    if not peaks or not any(peaks.values()):
        return ["\nNo int8 ceiling: bench_core measured no int8 peak on this CPU (neither AVX512-VNNI nor AVX2)."]
    vnni = has_vnni()
    how = "vpdpbusd" if "avx512_vnni" in cpu_flags() else "vpmaddubsw + vpmaddwd + vpaddd, no VNNI"
    caveat = "" if vnni else (
        " On a CPU without VNNI this is the rate of that sequence, not a ceiling: a kernel that lets pairs of "
        "products saturate in int16, or keeps partial sums in int16 longer, can pass it (PyTorch does here), and "
        "Quanta's 8-bit models run each weight in two halves under it (Note [Exact integers without VNNI]).")
    # Without VNNI: what exact arithmetic allows, the sequence twice (two halves) or vpmaddwd on 16-bit operands.
    exact = {}
    if not vnni:
        for t in peaks:
            widened = statistics.median(rows.get(("int8_exact_peak", t), {}).get("q") or [0])
            exact[t] = (max(peaks[t] / 2, widened), widened)
        if exact:
            caveat += (" Exact u8 x s8 products at 8 bits: " + ", ".join(
                f"{e:.0f} GMAC/s at {t} thread{'s' if t > 1 else ''} (the larger of half the sequence, "
                f"{peaks[t] / 2:.0f}, and vpmaddwd on operands widened to 16 bits, {w:.0f})"
                for t, (e, w) in sorted(exact.items())) +
                ": the exact rate, beside which Quanta's 8-bit rows are set below "
                "(its split weights are the first of the two).")
    out = ["", f"The int8 rows against this machine's int8 ceiling (bench_core's measured peak, {how}: " +
           ", ".join(f"{peaks[t]:.0f} GMAC/s at {t} thread{'s' if t > 1 else ''}" for t in sorted(peaks)) +
           "), counting the multiply-accumulates of the convolutions and linear layers as the integer model does (" +
           "; ".join(f"{label}: {macs[name] / 1e6:.1f} M an image" for name, label in
                     (("resnet20_b64", "ResNet-20"), ("resnet50", "ResNet-50")) if name in macs) + ")." + caveat, ""]
    gemm = {t: statistics.median(rows[("int8_gemm", t)]["q"]) for t in peaks if rows.get(("int8_gemm", t), {}).get("q")}
    if gemm:
        what = ("oneDNN's int8 GEMM underneath" if vnni else
                "without VNNI two oneDNN int8 GEMMs over split weights, counted as one")
        out.append(f"- Quanta's int8 matmul 1024^3 (bench_core's BM_MatmulInt8_1024; {what}): " +
                   ", ".join(f"{g:.0f} GMAC/s at {t} thread{'s' if t > 1 else ''} ({100 * g / peaks[t]:.0f}% of the "
                             "ceiling)" for t, g in sorted(gemm.items())) +
                   ": one large, regular product, for scale beside the networks' many smaller ones.")
    for name, label, target, ips in (("resnet20_b64", "ResNet-20 int8 batch 64", 1.5, True),
                                     ("resnet50", "ResNet-50 int8 batch 1", 0.8, False)):
        for t in sorted(peaks):
            r = rows.get((name, t))
            if name not in macs or not r or not r["q"] or not r["t"]:
                continue
            q, tt = statistics.median(r["q"]), statistics.median(r["t"])
            # images/s, or ms for one image
            rate = (lambda v: v * macs[name] / 1e9) if ips else (lambda v: macs[name] / (v / 1e3) / 1e9)
            need = rate(tt) * target if ips else rate(tt) / target
            goal = f">= {target:g}x PyTorch's images/s" if ips else f"<= {target:g}x PyTorch's latency"
            exact_part = f", {rate(q) / exact[t][0]:.2f}x the exact rate" if t in exact else ""
            out.append(f"- {label}, {t} thread{'s' if t > 1 else ''}: Quanta {rate(q):.0f} GMAC/s "
                       f"({100 * rate(q) / peaks[t]:.0f}% of the ceiling{exact_part}), PyTorch {rate(tt):.0f} "
                       f"({100 * rate(tt) / peaks[t]:.0f}%); the target ({goal}) needs {need:.0f} GMAC/s, "
                       f"{100 * need / peaks[t]:.0f}% of the ceiling for the whole network.")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (each figure: the median over rounds)")
    p.add_argument("--runs", type=int, default=7, help="timed runs per inference case and round")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per thread count and round")
    p.add_argument("--write", help="replace the marked section of this Markdown file with the table")
    p.add_argument("--section", default="",
                   help="with --write: the section marked <!-- compare_torch:begin SECTION --> ... "
                        "<!-- compare_torch:end SECTION --> (one per kind of machine; default: the unnamed one)")
    p.add_argument("--skip_resnet50", action="store_true")
    p.add_argument("--no_compile", action="store_true",
                   help="leave torch.compile out of PyTorch's training figure (eager only; compiling takes minutes)")
    p.add_argument("--also_torch", metavar="PYTHON",
                   help="also measure the PyTorch of this interpreter (e.g. /usr/bin/python3 with Debian's "
                        "python3-torch) in the same rounds, as a second table")
    p.add_argument("--torch_part", help=argparse.SUPPRESS)  # what --also_torch runs in the other interpreter
    args = p.parse_args()

    if args.torch_part:  # one part of a round for another interpreter's caller: JSON on the last line
        if args.torch_part == "version":
            print(json.dumps(torch_describe()))
        elif args.torch_part == "probe":
            print(json.dumps({"probe": torch_int8_probe()}))
        else:
            print(json.dumps({"figures": torch_figures(args.torch_part, args)}))
        return

    import torch
    bin_dir = subprocess.run(["bazel", "info", "bazel-bin"], capture_output=True, text=True).stdout.strip()
    for b in ("bench_nn", "bench_infer", "bench_bert", "bench_quant", "bench_core"):
        if not os.path.exists(os.path.join(bin_dir, "apps", b)):
            sys.exit(f"error: {bin_dir}/apps/{b} missing: bazel build //apps:{b} first")

    rows = {}  # key -> {"q": [...], "t": [...], "t2": [...], "note": {...}, "note2": {...}} (see add)
    macs = {}  # case -> multiply-accumulates an image, as bench_infer's integer model counts them

    def add(key, q=None, note=None, **torch_side):
        """q: a Quanta figure; t= or t2=: a figure of the PyTorch of this process or of --also_torch's, whose
        variant (engine, memory format) is `note`."""
        r = rows.setdefault(key, {"q": [], "t": [], "t2": [], "note": set(), "note2": set()})
        if q is not None:
            r["q"].append(q)
        for side, value in torch_side.items():
            r[side].append(value)
            if note:
                r["note" if side == "t" else "note2"].add(note)

    vnni = has_vnni()
    other = None  # the second PyTorch (--also_torch): its version line, then its figures under "t2"
    if args.also_torch:
        other = torch_in(args.also_torch, "version", args)

    def add_torch(found, side):
        """PyTorch's figures of one part; the 7-bit rows (no VNNI) compare against the same PyTorch figures."""
        for key, value, note in found:
            keys = [key]
            if key[0] in ("resnet20_b64", "resnet20_b1", "resnet50") and not vnni:
                keys.append((key[0] + "_a7", key[1]))
            if key[0] == "bert":
                keys = [("bert", 2), ("bert_dyn", 2)] + ([] if vnni else [("bert_a7", 2), ("bert_dyn_a7", 2)])
            for k in keys:
                add(k, note=note, **{side: value})

    def torch_part(part):
        add_torch(torch_figures(part, args), "t")
        if other:
            add_torch([(tuple(k), v, n) for k, v, n in torch_in(args.also_torch, part, args)["figures"]], "t2")

    start = time.monotonic()
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for t, ips in quanta_train(bin_dir, args.steps).items():
            add(("train", t), q=ips)
        torch_part("train")
        for only in cases(args):
            for t, f in quanta_infer(bin_dir, only, args.runs).items():
                add((only, t), q=f["int8_ips"] if only == "resnet20_b64" else f["int8_ms"])
                if f["macs"]:
                    macs[only] = f["macs"]
                if only == "resnet50":
                    add(("resnet50_vs_folded", t), q=f["folded_ms"] / f["int8_ms"])
            if not vnni:  # 7-bit activations: no weight split (Note [Exact integers without VNNI])
                for t, f in quanta_infer(bin_dir, only, args.runs, abits=7).items():
                    add((only + "_a7", t), q=f["int8_ips"] if only == "resnet20_b64" else f["int8_ms"])
            torch_part(only)
        for t, g in quanta_gemm(bin_dir, args.runs).items():
            add(("gemm", t), q=g)
        torch_part("gemm")
        bert = quanta_bert(bin_dir, max(3, args.runs // 2))
        if (1, 2) in bert:
            add(("bert", 2), q=bert[(1, 2)]["int8_ms"])
            add(("bert_dyn", 2), q=bert[(1, 2)]["dyn_ms"])
        if not vnni:  # PyTorch's dynamic Linear quantizes activations to 7 bits (reduce_range=True)
            bert7 = quanta_bert(bin_dir, max(3, args.runs // 2), abits=7)
            if (1, 2) in bert7:
                add(("bert_a7", 2), q=bert7[(1, 2)]["int8_ms"])
                add(("bert_dyn_a7", 2), q=bert7[(1, 2)]["dyn_ms"])
        torch_part("bert")
        for name, ratio in quanta_qat(bin_dir, args.steps).items():
            add(("qat", name), q=ratio)
        for (name, t), g in quanta_int8_peak(bin_dir).items():
            add(({"Int8Peak": "int8_peak", "Int8ExactPeak": "int8_exact_peak", "MatmulInt8": "int8_gemm"}[name], t), q=g)
    probe = torch_int8_probe()
    probe2 = {e: tuple(v) for e, v in torch_in(args.also_torch, "probe", args)["probe"].items()} if other else None
    minutes = (time.monotonic() - start) / 60

    compared = []  # (label, key, unit, higher_better) of the main table's rows, for --also_torch's table

    def line(label, key, unit, higher_better, target=None, own=None, side="t"):
        """target: (op, v) on the ratio to PyTorch; own: (op, v, unit) on Quanta's own median. side t2: a row of
        --also_torch's table (no target column)."""
        r = rows.get(key)
        if not r or not r["q"] or (side == "t2" and not r["t2"]):
            return None
        if side == "t" and r["t"]:
            compared.append((label, key, unit, higher_better))
        qm = statistics.median(r["q"])
        tm = statistics.median(r[side]) if r[side] else None
        ratio = qm / tm if tm else None
        verdict = ""
        met = lambda x, op, v: x >= v if op == ">=" else x <= v
        if target is not None and ratio is not None:
            op, v = target
            verdict = f"{op} {v:g}x: {'met' if met(ratio, op, v) else '**missed**'}"
        if own is not None:
            op, v, u = own
            verdict = f"Quanta {op} {v:g}{u}: {'met' if met(qm, op, v) else '**missed**'}"
        note = ", ".join(sorted(r["note" if side == "t" else "note2"]))
        return (f"| {label} | {unit} ({'higher' if higher_better else 'lower'} is better) | {spread(r['q'])} | "
                f"{spread(r[side]) if r[side] else '—'}{' [' + note + ']' if note else ''} | "
                f"{f'{ratio:.2f}x' if ratio else '—'} |" + (f" {verdict} |" if side == "t" else ""))

    out = [
        f"Measured by `python3 tools/compare_torch.py --rounds={args.rounds} --runs={args.runs} --steps={args.steps}"
        f"{' --skip_resnet50' if args.skip_resnet50 else ''}{' --no_compile' if args.no_compile else ''}"
        f"{' --also_torch=' + args.also_torch if args.also_torch else ''}` on {datetime.date.today()}, {cpu_name()}, "
        "against "
        f"PyTorch {torch.__version__} (its quantized engines: {', '.join(torch.backends.quantized.supported_engines)}), "
        f"{minutes:.0f} min. Each figure is the median over {args.rounds} interleaved rounds (range in brackets); "
        "ratio: Quanta / PyTorch.",
        "",
        "| figure | unit | Quanta | PyTorch | ratio | target (issue 18) |",
        "|---|---|---|---|---|---|",
    ]
    for t in (1, 2):
        out.append(line(f"ResNet-20 f32 training, batch 128, {t} thread{'s' if t > 1 else ''}", ("train", t),
                        "images/s", True, (">=", 1.2)))
    for t in (1, 2):
        out.append(line(f"ResNet-20 int8, batch 64, {t} thread{'s' if t > 1 else ''}", ("resnet20_b64", t),
                        "images/s", True, (">=", 1.5)))
    for t in (1, 2):
        out.append(line(f"ResNet-20 int8, batch 1, {t} thread{'s' if t > 1 else ''}", ("resnet20_b1", t), "ms", False))
    for t in (1, 2):
        out.append(line(f"ResNet-50 int8, batch 1, {t} thread{'s' if t > 1 else ''}", ("resnet50", t), "ms", False,
                        ("<=", 0.8)))
    a7 = " with 7-bit activations (no split without VNNI); PyTorch: as above"
    for only, label, unit in (("resnet20_b64", "ResNet-20 int8, batch 64", "images/s"),
                              ("resnet20_b1", "ResNet-20 int8, batch 1", "ms"),
                              ("resnet50", "ResNet-50 int8, batch 1", "ms")):
        for t in (1, 2):
            out.append(line(f"{label}, {t} thread{'s' if t > 1 else ''},{a7}", (only + "_a7", t), unit,
                            unit == "images/s"))
    for t in (1, 2):
        out.append(line(f"ResNet-50 int8 speed-up over Quanta's folded f32, {t} thread{'s' if t > 1 else ''}",
                        ("resnet50_vs_folded", t), "x", True, own=(">=", 3.5, "x")))
    out.append(line("BERT-base seq 128 int8 (static ranges), batch 1, 2 threads; PyTorch: dynamic", ("bert", 2),
                    "ms", False, own=("<=", 50, " ms")))
    out.append(line("BERT-base seq 128 int8 (dynamic), batch 1, 2 threads; PyTorch: dynamic", ("bert_dyn", 2), "ms",
                    False))
    for key, kind in (("bert_a7", "static ranges"), ("bert_dyn_a7", "dynamic")):
        out.append(line(f"BERT-base seq 128 int8 ({kind}), batch 1, 2 threads, with 7-bit activations as PyTorch's "
                        "dynamic Linear (reduce_range); PyTorch: dynamic", (key, 2), "ms", False))
    for t in (1, 2):
        out.append(line(f"f32 GEMM 1024^3, {t} thread{'s' if t > 1 else ''}", ("gemm", t), "GFLOP/s", True))
    for key in sorted(k for k in rows if k[0] == "qat"):
        out.append(line(f"QAT step / f32 step, ResNet-20 batch 128, policy `{key[1]}`", key, "x", False,
                        own=("<=", 1.15, "x")))
    out = [o for o in out if o is not None]
    if ("bert", 2) in rows and not rows[("bert", 2)]["t"]:
        out.append("\nPyTorch's BERT: transformers is not installed here (pip install transformers).")
    out.append("\nTargets: issue 18's, as this program measured them: on the ratio to PyTorch, or (\"Quanta ...\") on "
               "Quanta's own figure: the QAT step against Quanta's f32 step, ResNet-50 int8 against Quanta's folded "
               "f32, BERT-base's absolute latency.")
    out += ceiling_lines(rows, macs)
    out += probe_line(probe)
    if other:
        name = (f"Debian's PyTorch (python3-torch {other['package']}, torch {other['version']})" if other["debian"]
                else f"PyTorch {other['version']}")
        short = "Debian's PyTorch" if other["debian"] else f"PyTorch {other['version']}"
        blas = f"; its BLAS: {other['blas']}" if other.get("blas") else ""
        out += ["", f"Against {name}, the PyTorch of `{other['python']}` (its quantized engines: "
                f"{', '.join(other['engines'])}{blas}), measured in the same rounds, each figure right after the table "
                f"above's PyTorch figure; ratio: Quanta / {short}.", "",
                f"| figure | unit | Quanta | {short} | ratio |", "|---|---|---|---|---|"]
        out += [o for o in (line(*c, side="t2") for c in compared) if o is not None]
        out += probe_line(probe2, f"The int8 convolution of {name}")
    text = "\n".join(out) + "\n"
    print(text)
    if args.write:
        with open(args.write) as f:
            doc = f.read()
        name = f" {args.section}" if args.section else ""
        begin, end = f"<!-- compare_torch:begin{name} -->", f"<!-- compare_torch:end{name} -->"
        if begin not in doc or end not in doc:
            sys.exit(f"error: {args.write} has no {begin} ... {end} section")
        doc = doc[: doc.index(begin) + len(begin)] + "\n" + text + doc[doc.index(end):]
        tmp = args.write + ".tmp"
        with open(tmp, "w") as f:
            f.write(doc)
        os.replace(tmp, args.write)


if __name__ == "__main__":
    main()
