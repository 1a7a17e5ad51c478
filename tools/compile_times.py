#!/usr/bin/env python3
"""Compile time of every C++ translation unit of some targets, one at a time.

    python3 tools/compile_times.py //...                 # the table on stdout
    python3 tools/compile_times.py --out=docs/compile_times.md --limit=60 //...

Asks Bazel (aquery) for the targets' compile commands at the default
optimization, runs each source's command alone in the execution root with its
output sent to a temporary folder (Bazel's own outputs are not touched), and
prints the wall time per file, slowest first. With --limit, exits 1 if a file
takes longer. Run it on an idle machine: the figures are wall times.
Not used by CI.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", help="Bazel target patterns, e.g. //... or //backends/cpu:cpu")
    p.add_argument("--out", help="also write the table as Markdown to this file")
    p.add_argument("--limit", type=float, default=0, help="fail (exit 1) if a file takes more seconds than this")
    p.add_argument("--top", type=int, default=0, help="print only the N slowest (0: all)")
    args = p.parse_args()

    query = "mnemonic('CppCompile', " + " + ".join(args.targets) + ")"
    aq = subprocess.run(["bazel", "aquery", query, "--output=jsonproto"], capture_output=True, text=True)
    if aq.returncode != 0:
        sys.exit("error: bazel aquery failed:\n" + aq.stderr[-2000:])
    actions = json.loads(aq.stdout).get("actions", [])
    execroot = subprocess.run(["bazel", "info", "execution_root"], capture_output=True, text=True).stdout.strip()
    if not execroot:
        sys.exit("error: bazel info execution_root gave nothing")

    # One command per source (the .pic.o variant when there are both): the two
    # variants differ only in -fPIC.
    by_source = {}
    for a in actions:
        argv = a["arguments"]
        if "-c" not in argv:
            continue
        src = argv[argv.index("-c") + 1]
        if src.startswith("external/") or src.startswith("bazel-out/"):
            continue
        pic = "-fPIC" in argv
        if src not in by_source or pic:
            by_source[src] = argv

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (src, argv) in enumerate(sorted(by_source.items())):
            cmd = list(argv)
            cmd[cmd.index("-o") + 1] = os.path.join(tmp, "out.o")
            if "-MF" in cmd:
                cmd[cmd.index("-MF") + 1] = os.path.join(tmp, "out.d")
            start = time.monotonic()
            r = subprocess.run(cmd, cwd=execroot, capture_output=True, text=True)
            seconds = time.monotonic() - start
            if r.returncode != 0:
                sys.exit(f"error: compiling {src} failed:\n{r.stderr[-2000:]}")
            rows.append((seconds, src))
            print(f"[{i + 1}/{len(by_source)}] {src}: {seconds:.1f} s", file=sys.stderr, flush=True)

    rows.sort(reverse=True)
    total = sum(s for s, _ in rows)
    shown = rows[: args.top] if args.top else rows
    compiler = by_source[rows[0][1]][0] if rows else "?"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    lines = [
        f"Compile time per translation unit of `{' '.join(args.targets)}`, one file at a time, "
        f"at Bazel's default optimization (the files' own copts included), on {cpu_name()} "
        f"({os.cpu_count()} cores), {version}: {len(rows)} files, {total:.0f} s in all.",
        "Produced by `python3 tools/compile_times.py" + (f" --top={args.top}" if args.top else "") +
        (f" --limit={args.limit:g}" if args.limit else "") + " " + " ".join(args.targets) + "`.",
        "",
        "| file | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {src} | {s:.1f} |" for s, src in shown]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        tmp_out = args.out + ".tmp"
        with open(tmp_out, "w") as f:
            f.write(text)
        os.replace(tmp_out, args.out)
    over = [(s, src) for s, src in rows if args.limit and s > args.limit]
    if over:
        print(f"over the {args.limit:g} s limit: " + ", ".join(f"{src} ({s:.0f} s)" for s, src in over), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
