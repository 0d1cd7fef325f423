#!/usr/bin/env python3
"""Tables from the log of `benches/manycore_run.sh`: for every row of each thread-count section
(`== 16 threads`, `== 2 threads`, or one section per side such as `== ours rate, 16 threads`), PyTorch's best variant (lowest median), our criterion median
and the ratio PyTorch / ours; then the thread-efficiency bench's medians.

    python3 benches/manycore_table.py perf.log
"""
import re
import sys

from compare_torch import variant_name

UNIT = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def sections(text):
    parts = re.split(r"^== (.+)$", text, flags=re.M)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def ours(body):
    lines, rows = body.splitlines(), {}
    for i, line in enumerate(lines):
        m = re.match(r"\s+time:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if m and i > 0:
            rows[lines[i - 1].strip()] = float(m.group(1)) * UNIT[m.group(2)]
    return rows


def torch_best(body):
    best = {}
    for line in body.splitlines():
        m = re.match(r"(DeltaR|CRATE)\s+(.+?)\s+(f32|f64)\s+(.+?)\s+([\d.]+) ms \(min", line)
        if not m:
            continue
        group, case, dtype, variant, ms = m.groups()
        if group == "DeltaR":
            measure, name = variant.split(": ", 1)
        else:
            note = line.rsplit("%", 1)[-1].strip()
            measure, name = variant.strip(), variant_name({"note": note}, "official block semantics")
        key = (case.strip(), dtype, measure.strip())
        if key not in best or float(ms) < best[key][0]:
            best[key] = (float(ms), name)
    return best


def our_name(case, dtype, measure):
    if case.startswith("d="):
        return f"delta_r_{dtype}/{measure}/{case}"
    group = "crate_model" if "full model" in case else "crate_block"
    return f"{group}_{dtype}/{measure}/{case.replace(' block ', ' ')}"


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    by_threads, efficiency = {}, []
    for title, body in sections(text):
        if title.startswith("threads bench"):
            efficiency.append(f"{title}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in ours(body).items()))
            continue
        m = re.search(r"(\d+) threads", title)
        if m:  # a section per thread count, or one per side and thread count
            by_threads[m.group(1)] = by_threads.get(m.group(1), "") + body
    for threads, body in by_threads.items():
        best, mine = torch_best(body), ours(body)
        print(f"\n{threads} threads\n")
        print("| case | dtype | measure | best PyTorch variant | PyTorch median ms | mcr2 median ms | PyTorch / mcr2 |")
        print("|---|---|---|---|---:|---:|---:|")
        for (case, dtype, measure), (ms, name) in best.items():
            o = mine.get(our_name(case, dtype, measure))
            if o:
                print(f"| {case.replace(' block ', ' ')} | {dtype} | {measure} | {name} | {ms:.3f} | {o:.3f} | {ms / o:.2f}× |")
    for line in efficiency:
        print("\n" + line)


if __name__ == "__main__":
    main()
