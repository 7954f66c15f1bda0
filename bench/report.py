#!/usr/bin/env python3
"""Turns one `make bench` run (build/bench/raw.txt, the @lines of bench/lib.sh) into
build/bench/results.csv, a PNG chart per scenario (gnuplot) and the report (docs/benchmarks.md).

Per (scenario, metric, variant, x): the median of the repeated runs and their spread (min-max).
Per metric with a subject and baselines: the ratio subject/baseline taken within each run (the
two were measured interleaved, in the same minute), then the median of those ratios and their
spread. Targets (bench/targets.csv) compare a median or a ratio with a limit: PASS or MISS, and
a MISS keeps its figure and its reason; a target whose figure was skipped or never produced says
why. Standard library only; gnuplot draws the charts when installed."""
import argparse
import csv
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import OrderedDict, defaultdict

LINE_RE = re.compile(r"^@(\w+) (.*)$")
# Keys whose value runs to the end of the line (free text).
FREE_TEXT = ("reason", "text")


def parse_fields(rest):
    """key=value pairs; values may be quoted; `reason=`/`text=` take the rest of the line."""
    fields = {}
    for key in FREE_TEXT:
        m = re.search(r"(?:^| )%s=(.*)$" % key, rest)
        if m:
            fields[key] = m.group(1).strip()
            rest = rest[: m.start()]
    for tok in shlex.split(rest):
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields


class Run:
    def __init__(self):
        self.env = OrderedDict()
        self.scenarios = OrderedDict()  # name -> {"about": str, "metrics": OrderedDict}
        self.values = defaultdict(dict)  # (s, m, v, x) -> {run: value}
        self.units = {}
        self.skips = OrderedDict()  # (s, m, v, x) -> reason
        self.notes = defaultdict(list)  # (s, m) -> [text]
        self.errors = OrderedDict()  # scenario -> text

    def scenario(self, name):
        return self.scenarios.setdefault(name, {"about": "", "metrics": OrderedDict()})

    def metric(self, s, m):
        return self.scenario(s)["metrics"].setdefault(m, {"title": m, "unit": "", "better": "lower"})


def load_raw(path):
    r = Run()
    with open(path) as f:
        for line in f:
            m = LINE_RE.match(line.rstrip("\n"))
            if not m:
                continue
            kind, rest = m.groups()
            if kind == "env":
                k, _, v = rest.partition("=")
                r.env[k] = v
                continue
            f_ = parse_fields(rest)
            s = f_.get("scenario", "?")
            if kind == "about":
                r.scenario(s)["about"] = f_.get("text", "")
            elif kind == "meta":
                r.metric(s, f_["metric"]).update({k: v for k, v in f_.items() if k not in ("scenario", "metric")})
            elif kind == "result":
                key = (s, f_["metric"], f_["variant"], f_.get("x", "-"))
                r.metric(s, f_["metric"])
                r.values[key][f_.get("run", "1")] = float(f_["value"])
                r.units[key] = f_.get("unit", "")
            elif kind == "skip":
                key = (s, f_["metric"], f_["variant"], f_.get("x", "-"))
                r.metric(s, f_["metric"])
                r.skips[key] = f_.get("reason", "")
            elif kind == "note":
                r.notes[(s, f_["metric"])].append(f_.get("text", ""))
            elif kind == "error":
                r.scenario(s)
                r.errors[s] = f_.get("text", "failed")
    return r


def spread(vals):
    return statistics.median(vals), min(vals), max(vals)


def variants_of(r, s, m):
    """Variants and x values in first-seen order."""
    vs, xs = OrderedDict(), OrderedDict()
    for key in list(r.values) + list(r.skips):
        if key[0] == s and key[1] == m:
            vs[key[2]] = 1
            xs[key[3]] = 1
    return list(vs), list(xs)


def ratio(r, s, m, v, b, x):
    """Median and spread of per-run ratios v/b, or None."""
    a, c = r.values.get((s, m, v, x), {}), r.values.get((s, m, b, x), {})
    per_run = [a[k] / c[k] for k in a if k in c and c[k]]
    return spread(per_run) if per_run else None


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 10:
        return "%.2f" % v
    return "%.3f" % v


def x_sort_key(x):
    try:
        return (0, float(x))
    except ValueError:
        return (1, x)


# --- targets ---------------------------------------------------------------------------------

OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}


def load_targets(path):
    rows = []
    with open(path) as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#") and line.strip()):
            rows.append({k: (v or "").strip() for k, v in row.items()})
    return rows


def target_rows(r, targets):
    """One verdict per target and x: (target, x, figure_text, value, verdict, reason)."""
    out = []
    for t in targets:
        s, m, v, b = t["scenario"], t["metric"], t["variant"], t["baseline"]
        _, xs = variants_of(r, s, m)
        xs = [x for x in xs if t["x"] in ("*", x)] or [t["x"] if t["x"] != "*" else "-"]
        for x in xs:
            out.append(judge(r, t, s, m, v, b, x))
    return out


def judge(r, t, s, m, v, b, x):
    limit = float(t["limit"])
    reasons = list(r.notes.get((s, m), []))
    if b:
        got = ratio(r, s, m, v, b, x)
        what = "%s / %s" % (v, b)
    else:
        vals = list(r.values.get((s, m, v, x), {}).values())
        got = spread(vals) if vals else None
        what = v
    if got is None:
        skip = r.skips.get((s, m, v, x)) or (b and r.skips.get((s, m, b, x)))
        why = skip or r.errors.get(s) or t.get("note") or "not measured in this run"
        if s not in r.scenarios and not skip:
            why = "scenario `%s` did not run%s" % (s, ": " + t["note"] if t.get("note") else "")
        return (t, x, what, None, "NOT RUN", why)
    verdict = "PASS" if OPS[t["op"]](got[0], limit) else "MISS"
    if verdict == "MISS" and t.get("note"):
        reasons.insert(0, t["note"])
    return (t, x, what, got, verdict, "; ".join(reasons) if verdict == "MISS" else "")


# --- outputs ---------------------------------------------------------------------------------


def write_csv(r, path, verdicts):
    by_key = defaultdict(list)
    for t, x, what, got, verdict, why in verdicts:
        by_key[(t["scenario"], t["metric"], t["variant"], t["baseline"], x)].append(
            "%s %s %s" % (verdict, t["op"], t["limit"]))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["scenario", "metric", "variant", "baseline", "x", "unit", "runs", "median",
                    "min", "max", "target"])
        for (s, m, v, x), runs in r.values.items():
            med, lo, hi = spread(list(runs.values()))
            w.writerow([s, m, v, "", x, r.units[(s, m, v, x)], len(runs), fmt(med), fmt(lo), fmt(hi),
                        " ".join(by_key.get((s, m, v, "", x), []))])
        for s, sc in r.scenarios.items():
            for m, meta in sc["metrics"].items():
                subj, bases = meta.get("subject"), [b for b in meta.get("baselines", "").split(",") if b]
                _, xs = variants_of(r, s, m)
                for b in bases:
                    for x in xs:
                        got = ratio(r, s, m, subj, b, x)
                        if got:
                            n = len([k for k in r.values[(s, m, subj, x)] if k in r.values[(s, m, b, x)]])
                            w.writerow([s, m, subj, b, x, "ratio", n, "%.3f" % got[0], "%.3f" % got[1],
                                        "%.3f" % got[2], " ".join(by_key.get((s, m, subj, b, x), []))])
        for (s, m, v, x), why in r.skips.items():
            w.writerow([s, m, v, "", x, "skipped", 0, "", "", "", why])


def chart(r, s, path):
    """One PNG per scenario: a panel per metric, bars (median, min-max whiskers) per variant, or
    lines over x for curves. Returns True when drawn."""
    metrics = [m for m in r.scenarios[s]["metrics"] if any(k[0] == s and k[1] == m for k in r.values)]
    if not metrics:
        return False
    datadir = tempfile.mkdtemp(prefix="bench-chart-")
    cols = 2 if len(metrics) > 1 else 1
    rows = (len(metrics) + cols - 1) // cols
    plot = ["set terminal pngcairo size %d,%d font 'sans,9'" % (560 * cols, 330 * rows),
            "set output '%s'" % path, "set multiplot layout %d,%d" % (rows, cols),
            "set grid ytics", "set key top left font 'sans,8'", "set style fill solid 0.6 border -1"]
    for i, m in enumerate(metrics):
        meta = r.scenarios[s]["metrics"][m]
        vs, xs = variants_of(r, s, m)
        dat = os.path.join(datadir, "%s.dat" % m)
        title = "%s (%s)" % (meta.get("title", m), meta.get("unit", ""))
        title = title.replace("'", "").replace("_", "\\_")
        curve = len([x for x in xs if x != "-"]) > 1
        with open(dat, "w") as f:
            if curve:
                for v in vs:
                    f.write("# %s\n" % v)
                    for x in sorted(xs, key=x_sort_key):
                        runs = r.values.get((s, m, v, x))
                        if runs:
                            med, lo, hi = spread(list(runs.values()))
                            f.write("%s %g %g %g\n" % (x, med, lo, hi))
                    f.write("\n\n")
            else:
                floor, top = 0, 0  # bars stand on 0; a negative figure (an added latency) goes below
                for j, v in enumerate(vs):
                    runs = r.values.get((s, m, v, "-"))
                    if runs:
                        med, lo, hi = spread(list(runs.values()))
                        floor, top = min(floor, lo), max(top, hi)
                        f.write("%d \"%s\" %g %g %g\n" % (j, v.replace("_", "\\\\_"), med, lo, hi))
        plot.append("set title '%s'" % title)
        if curve:
            plot += ["set logscale x", "set xlabel '%s'" % meta.get("xlabel", "x"), "unset xtics", "set xtics"]
            parts = ["'%s' index %d using 1:2:3:4 with yerrorlines title '%s'" % (dat, k, v.replace("_", "\\_"))
                     for k, v in enumerate(vs) if any((s, m, v, x) in r.values for x in xs)]
            plot.append("plot " + ", ".join(parts))
            plot += ["unset logscale x", "unset xlabel"]
        else:
            plot += ["set boxwidth 0.6", "set yrange [%g:%s]" % (floor, "*" if top > 0 else "0"), "set xrange [-0.6:%g]" % (len(vs) - 0.4)]
            plot.append("plot '%s' using 1:3:xtic(2) with boxes notitle, '' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0 notitle" % dat)
            plot += ["set autoscale y", "set autoscale x"]
    plot.append("unset multiplot")
    try:
        subprocess.run(["gnuplot"], input="\n".join(plot), text=True, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError) as e:
        print("report: chart %s: %s" % (path, getattr(e, "stderr", e)), file=sys.stderr)
        return False
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
    return True


def metric_table(r, s, m, meta):
    vs, xs = variants_of(r, s, m)
    subj = meta.get("subject")
    bases = [b for b in meta.get("baselines", "").split(",") if b and b in vs]
    unit = meta.get("unit", "")
    head = ["variant"] + (["x"] if xs != ["-"] else []) + ["median (%s)" % unit, "spread (min-max)", "runs"]
    head += ["%s / %s" % (subj, b) for b in bases]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for x in sorted(xs, key=x_sort_key):
        for v in vs:
            runs = r.values.get((s, m, v, x))
            row = [("**%s**" % v) if v == subj else v] + ([x] if xs != ["-"] else [])
            if runs:
                med, lo, hi = spread(list(runs.values()))
                row += [fmt(med), "%s-%s" % (fmt(lo), fmt(hi)), str(len(runs))]
            else:
                row += ["skipped: %s" % r.skips.get((s, m, v, x), "no figure"), "", "0"]
            for b in bases:
                got = ratio(r, s, m, subj, b, x) if v == subj else None
                row.append("%.3f (%.3f-%.3f)" % got if got else "")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def write_doc(r, path, verdicts, charts_dir, drawn):
    env = r.env
    out = ["# Benchmarks", "",
           "Generated by `make bench` (bench/run.sh, bench/report.py) from one run: do not edit by hand.",
           "Every figure is the median of repeated runs with their spread (min-max); a ratio is taken",
           "within each run, between contenders measured interleaved, then its median. Targets come",
           "from the issues; a MISS stays here with its figure and its reason. Raw figures:",
           "`build/bench/results.csv` after a run.", "",
           "| run | |", "|---|---|"]
    for k in ("date", "machine", "kernel", "cpu", "memory", "commit", "mode", "duration",
              "load_before", "load_after"):
        if k in env:
            out.append("| %s | %s |" % (k.replace("_", " "), env[k]))
    out += ["", "## Targets", "", "| scenario | figure | target | value | verdict | source | reason |",
            "|---|---|---|---|---|---|---|"]
    for t, x, what, got, verdict, why in verdicts:
        fig = "%s%s: %s" % (t["metric"], "" if x == "-" else " @ %s" % x, what)
        val = "-" if got is None else "%s (%s-%s)" % (fmt(got[0]), fmt(got[1]), fmt(got[2]))
        out.append("| %s | %s | %s %s | %s | **%s** | %s | %s |" % (
            t["scenario"], fig, t["op"], t["limit"], val, verdict, t["source"], why))
    for s, sc in r.scenarios.items():
        out += ["", "## %s" % s, ""]
        if sc["about"]:
            out += [sc["about"], ""]
        if s in r.errors:
            out += ["**The scenario failed:** %s" % r.errors[s], ""]
        if s in drawn:
            out += ["![%s](%s/%s.png)" % (s, os.path.basename(charts_dir), s), ""]
        for m, meta in sc["metrics"].items():
            out += ["### %s" % meta.get("title", m), ""]
            out += metric_table(r, s, m, meta)
            for n in r.notes.get((s, m), []):
                out += ["", "Note: %s" % n]
            out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--charts", required=True, help="directory for the PNGs (one per scenario)")
    ap.add_argument("--only", default="", help="keep the targets of scenarios matching this regex")
    a = ap.parse_args()
    r = load_raw(a.raw)
    targets = [t for t in load_targets(a.targets) if re.search(a.only, t["scenario"])]
    verdicts = target_rows(r, targets)
    os.makedirs(a.charts, exist_ok=True)
    drawn = [s for s in r.scenarios if chart(r, s, os.path.join(a.charts, "%s.png" % s))]
    write_csv(r, a.csv, verdicts)
    write_doc(r, a.doc, verdicts, a.charts, drawn)
    for t, x, what, got, verdict, why in verdicts:
        print("%-7s %s %s%s %s %s %s%s" % (verdict, t["scenario"], t["metric"], "" if x == "-" else "@" + x,
                                           what, "-" if got is None else fmt(got[0]), t["op"] + " " + t["limit"],
                                           (" (" + why + ")") if why else ""))


if __name__ == "__main__":
    main()
