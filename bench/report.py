#!/usr/bin/env python3
"""report.py — turn bench results into docs/benchmarks.md tables and docs/img/ charts.

    bench/report.py [--run DIR] [--sweep DIR] [--regress DIR] [--udp DIR] [--ws DIR]
                    [--tls DIR] [--doc FILE] [--img DIR]

DIR defaults: the newest directory under bench/results/ holding results.tsv (written by
bench/run.sh), sweep.tsv (bench/sweep.sh), regress.tsv, udp.tsv, ws.tsv and tls.tsv or
tls_idle.tsv (bench/run.sh regress, udp, ws, tls). Each part of the report is optional: a
part with no results keeps what the document has.

Per configuration and server: the median over repetitions and the spread (min–max) of
throughput and of messages per server-CPU-second (throughput over the cores the server
kept busy under load — the fair figure when server and load share 2 cores), and cgnet's
ratio to the floor and to libuv in that figure. Only runs that ended cleanly (exit 0,
no errors, no non-2xx) and had the machine to themselves (other processes kept at most
MAX_OTHER cores busy) enter the medians; the others are counted in the runs column.

The document's generated parts sit between `<!-- BEGIN GENERATED: NAME -->` and
`<!-- END GENERATED: NAME -->` markers; everything outside them is left as it is.
Charts are drawn by gnuplot with bench/plot.gp (skipped, with a note, without gnuplot).
"""
import argparse
import csv
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

ECHO_SERVERS = ["cgnet", "cgnet_uring", "floor", "floor_uring", "libuv", "libevent"]
HTTP_SERVERS = ["cgnet_http", "cgnet_http_uring", "floor_http", "nginx", "h2o"]
# cgnet on each backend is compared with every peer; the peers are the other servers.
ECHO_CGNET = {"cgnet": "epoll", "cgnet_uring": "io_uring"}
HTTP_CGNET = {"cgnet_http": "epoll", "cgnet_http_uring": "io_uring"}
LABEL = {"cgnet_http": "cgnet", "cgnet_http_uring": "cgnet_uring", "floor_http": "floor"}
# One colour per server in every chart.
COLOR = {"cgnet": "#d62728", "cgnet_uring": "#e377c2", "floor": "#7f7f7f", "floor_uring": "#bcbd22", "libuv": "#1f77b4", "libevent": "#2ca02c",
         "nginx": "#ff7f0e", "h2o": "#9467bd"}


def has_rows(path):
    """A results file with at least one line past its header."""
    try:
        with open(path) as f:
            return sum(1 for _ in f) > 1
    except OSError:
        return False


def newest(name):
    base = os.path.join(BENCH, "results")
    if not os.path.isdir(base):
        return None
    dirs = sorted(d for d in os.listdir(base) if has_rows(os.path.join(base, d, name)))
    return os.path.join(base, dirs[-1]) if dirs else None


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def read_tsv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        # Messages per CPU-second of server and load tool together: on loopback the kernel's
        # TCP work lands on whichever side happens to run it, and this sum does not care.
        t, a, b = num(r.get("thr")), num(r.get("cpu_util")), num(r.get("load_util"))
        r["per_sys_cpu_s"] = str(t / (a + b)) if t is not None and a and b else "NA"
    return rows


# A run where something else kept more than this many cores busy (the "other CPU" of
# measure.py) is left out of the medians as noisy: on 2 cores a neighbour skews it.
MAX_OTHER = 0.25


def noisy(r):
    o = num(r.get("other_util"))
    return o is not None and o > MAX_OTHER


def clean(r):
    return (
        not noisy(r)
        and r.get("status") == "ok"
        and num(r.get("errors")) in (0.0, None)
        and num(r.get("non2xx")) in (0.0, None)
        and num(r.get("thr")) is not None
    )


class Group:
    """The runs of one configuration and server."""

    def __init__(self, rows):
        self.rows = rows
        self.ok = [r for r in rows if clean(r)]
        self.bad = len(rows) - len(self.ok)
        self.noisy = sum(1 for r in rows if noisy(r))
        self.errors = sum(num(r.get("errors")) or 0 for r in rows) + sum(
            num(r.get("non2xx")) or 0 for r in rows
        )

    def vals(self, key):
        return [v for v in (num(r.get(key)) for r in self.ok) if v is not None]

    def med(self, key):
        v = self.vals(key)
        return statistics.median(v) if v else None

    def spread(self, key):
        v = self.vals(key)
        return (min(v), max(v)) if v else (None, None)


def group(rows, keys):
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return {k: Group(v) for k, v in out.items()}


# ---- formatting ------------------------------------------------------------------------


def si(v, digits=3):
    """1234567 -> '1.23 M'."""
    if v is None:
        return "–"
    for div, suf in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= div:
            return f"{v / div:.{digits}g}{suf}"
    return f"{v:.{digits}g}"


def spread_txt(g, key):
    m = g.med(key)
    lo, hi = g.spread(key)
    if m is None:
        return "–"
    if len(g.vals(key)) < 2:
        return si(m)
    return f"{si(m)} ({si(lo)}–{si(hi)})"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"


def us(v):
    if v is None:
        return "–"
    if v >= 999500:
        return f"{v / 1e6:.2f} s"
    return f"{v / 1000:.3g} ms" if v >= 1000 else f"{v:.0f} µs"


def cores(g, key):
    """Median cores busy, from a *_util column ('–' for runs recorded without it)."""
    v = g.med(key)
    return "–" if v is None else f"{max(v, 0.0):.2f}"  # tick rounding can dip below 0


def runs_txt(g, err_word="err"):
    t = f"{len(g.ok)}/{len(g.rows)}"
    if g.noisy:
        t += f", {g.noisy} noisy"
    if g.errors:
        t += f", {int(g.errors)} {err_word}"
    return t


def mib(kb):
    return "–" if kb is None else f"{kb / 1024:.1f}"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def nice_top(v):
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k at or above v * 1.05: the
    top of a y axis with a little headroom over the highest value."""
    v = v * 1.05 if v and v > 0 else 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def size_txt(s):
    s = int(s)
    return f"{s // 1024} KiB" if s >= 1024 and s % 1024 == 0 else f"{s} B"


# ---- gnuplot ---------------------------------------------------------------------------


class Charts:
    def __init__(self, img_dir, data_dir):
        self.img_dir, self.data_dir = img_dir, data_dir
        self.ok = shutil.which("gnuplot") is not None
        self.made = []

    def run(self, name, params):
        if not self.ok:
            return None
        os.makedirs(self.img_dir, exist_ok=True)
        out = os.path.join(self.img_dir, name + ".png")
        params = dict(params, outfile=out)
        expr = "; ".join(
            f"{k}={v}" if isinstance(v, (int, float)) else f"{k}='{v}'" for k, v in params.items()
        )
        r = subprocess.run(["gnuplot", "-e", expr, os.path.join(BENCH, "plot.gp")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"report.py: gnuplot failed for {name}:\n{r.stderr}", file=sys.stderr)
            return None
        self.made.append(out)
        return os.path.relpath(out, os.path.join(ROOT, "docs"))

    def bars(self, name, title, ylabel, series, rows, ymax=0, refline=0):
        """rows: [(label, [(med, lo, hi) per series])]; values already scaled; a label may
        hold "\n". ymax: the top of the y axis (0: gnuplot's choice); refline: a dashed
        line at that value (0: none)."""
        path = os.path.join(self.data_dir, name + ".dat")
        with open(path, "w") as f:
            f.write("# label " + " ".join(f"{s} {s}_lo {s}_hi" for s in series) + "\n")
            for label, vals in rows:
                cells = []
                for v in vals:
                    cells += ["NA" if x is None else f"{x:.6g}" for x in v]
                f.write('"' + label.replace("\n", "\\n") + '" ' + " ".join(cells) + "\n")
        return self.run(name, {"chart": "bars", "datafile": path, "ttl": title, "ylab": ylabel,
                               "series": " ".join(series), "nseries": len(series),
                               "colors": " ".join(COLOR.get(s, "#17becf") for s in series),
                               "ymax": ymax, "refline": refline})

    def lines(self, name, title, xlabel, ylabel, panels, logx=10, xtics=None):
        """panels: [(panel_title, [(line_title, [(x, y)])])]. The panels stand side by
        side to be compared, so they share one y range, from 0 to above the highest y."""
        files, ptitles, ltitles = [], [], None
        for i, (pt, lines) in enumerate(panels):
            path = os.path.join(self.data_dir, f"{name}.{i}.dat")
            with open(path, "w") as f:
                for lt, pts in lines:
                    f.write(f"# {lt}\n")
                    for x, y in pts:
                        f.write(f"{x} {'NA' if y is None else f'{y:.6g}'}\n")
                    f.write("\n\n")
            files.append(path)
            ptitles.append(pt.replace(" ", "_"))
            ltitles = [lt.replace(" ", "_") for lt, _ in lines]
        colors = [COLOR.get(t, "") for t in ltitles]
        extra = {"colors": " ".join(colors)} if all(colors) else {}
        ys = [y for _, lines in panels for _, pts in lines for _, y in pts if y is not None]
        extra["ymax"] = nice_top(max(ys)) if ys else 0
        if xtics:
            extra["xtics"] = " ".join(str(x) for x in xtics)
        return self.run(name, {**extra, "chart": "lines", "datafiles": " ".join(files),
                               "ptitles": " ".join(ptitles), "ltitles": " ".join(ltitles),
                               "nlines": len(ltitles), "ttl": title, "xlab": xlabel,
                               "ylab": ylabel, "logx": logx})


# ---- sections ----------------------------------------------------------------------------


def machine_section(run_dir):
    info = {}
    path = os.path.join(run_dir, "machine.txt")
    if os.path.isfile(path):
        for line in open(path):
            k, _, v = line.rstrip("\n").partition("=")
            info[k] = v
    knobs = {}
    path = os.path.join(run_dir, "knobs.txt")
    if os.path.isfile(path):
        for line in open(path):
            k, _, v = line.rstrip("\n").partition("=")
            knobs[k] = v
    rows = [
        ("date", info.get("date")),
        ("CPUs (nproc)", info.get("nproc")),
        ("CPU model", info.get("cpu")),
        ("memory", info.get("mem")),
        ("kernel", info.get("kernel")),
        ("compiler", info.get("compiler")),
        ("cgnet build", f"CMake {info.get('build_type') or '?'}, git {info.get('git') or '?'}"),
        ("peers", f"libuv {info.get('libuv')}, libevent {info.get('libevent')}, "
                  f"nginx {info.get('nginx')}, h2o {info.get('h2o')}"),
        ("load tools", f"echoload (bench/echoload.c), wrk {info.get('wrk')}, "
                       f"h2load {info.get('h2load')}"),
    ]
    text = table(["", ""], [(k, v or "?") for k, v in rows])
    if knobs:
        text += "\n\nRun settings: " + ", ".join(
            f"`{k}={v}`" for k, v in knobs.items() if k != "cmd" and v
        ) + f" (results: `{os.path.relpath(run_dir, ROOT)}`)."
    return text


def echo_section(rows, charts):
    rows = [r for r in rows if r["bench"] == "echo"]
    if not rows:
        return None
    g = group(rows, ["placement", "mode", "conns", "size", "server"])
    placements = [p for p in ("pin1", "loops2") if any(k[0] == p for k in g)]
    servers = [s for s in ECHO_SERVERS if any(k[4] == s for k in g)]
    configs = sorted({k[1:4] for k in g}, key=lambda c: (c[0] != "pingpong", int(c[1]), int(c[2])))
    # The charts. As ratios to the floor, every chart of this section gets one y range, so
    # that pin1 and loops2, pingpong and stream compare by eye; in absolute figures (no
    # floor in the run) pingpong would vanish on stream's scale, so each gets its own.
    bar_ratio = "floor" in servers
    bar_charts = {}
    for pl in placements:
        for mode in ("pingpong", "stream"):
            cs = [c for c in configs if c[0] == mode]
            if cs:
                bar_charts[(pl, mode)] = [
                    bar_row(f"{c[1]} conns, {size_txt(c[2])}",
                            [g.get((pl, *c, s)) for s in servers], g.get((pl, *c, "floor")),
                            bar_ratio, "msgs")
                    for c in cs]
    shared_ymax = bar_chart_top(bar_charts.values()) if bar_ratio else None
    bar_what = ("messages per server-CPU-second relative to the floor" if bar_ratio
                else "messages per server-CPU-second")
    bar_ylabel = ("per server-CPU-s, floor = 1" if bar_ratio
                  else "million msgs per server-CPU-s")
    out = []
    for pl in placements:
        head = "pin1: server 1 loop on CPU 0, echoload 1 thread on CPU 1" if pl == "pin1" else \
            "loops2: server 2 loops, load tool 2 threads, nothing pinned"
        out.append(f"### Echo, {head}\n")
        out.append("cgnet's messages per server-CPU-second divided by each peer's (above 1: cgnet "
                   "does more work per CPU-second than that peer), and its throughput divided "
                   "by the floor's:\n")
        hrows = []
        peers = [s for s in servers if s not in ECHO_CGNET]
        for c in configs:
            for base, backend in ECHO_CGNET.items():
                cg = g.get((pl, *c, base))
                if cg is None:
                    continue
                cells = [f"{c[0]} {c[1]} conns {size_txt(c[2])}", backend]
                for s in peers:
                    p = g.get((pl, *c, s))
                    cells.append(ratio(cg.med("per_cpu_s"), p.med("per_cpu_s") if p else None))
                fl = g.get((pl, *c, "floor"))
                cells.append(ratio(cg.med("per_sys_cpu_s"), fl.med("per_sys_cpu_s") if fl else None))
                cells.append(ratio(cg.med("thr"), fl.med("thr") if fl else None))
                hrows.append(cells)
        out.append(table(["config", "cgnet on"] + [f"vs {s} (per CPU-s)" for s in peers]
                         + ["vs floor (per server+load CPU-s)", "vs floor (msgs/s)"], hrows))
        out.append("")
        drows = []
        for c in configs:
            for s in servers:
                x = g.get((pl, *c, s))
                if x is None:
                    continue
                drows.append([
                    f"{c[0]} {c[1]} {size_txt(c[2])}", s, spread_txt(x, "thr"),
                    cores(x, "cpu_util"), spread_txt(x, "per_cpu_s"), si(x.med("per_sys_cpu_s")),
                    us(x.med("p50_us")), us(x.med("p99_us")), mib(x.med("hwm_kb")), cores(x, "other_util"),
                    runs_txt(x),
                ])
        out.append("<details><summary>All figures (median, min–max over repetitions)</summary>\n")
        out.append(table(["config", "server", "msgs/s", "server CPU (cores)",
                          "msgs per server-CPU-s", "per server+load CPU-s", "p50", "p99", "peak RSS MiB",
                          "other CPU", "clean runs"], drows))
        out.append("\nOther CPU: cores busy outside the server and the load tool during the "
                   f"window (neighbours on this shared machine, interrupts); a run with more than "
                   f"{MAX_OTHER} is counted as noisy and left out of the medians.\n")
        out.append("</details>\n")
        if bar_ratio and any((pl, m) in bar_charts for m in ("pingpong", "stream")):
            out.append("Charts: each server's messages per server-CPU-second divided by the "
                       "floor's median in the same configuration (the dashed line at 1; the "
                       "floor's own figure is under each group), median and min–max over "
                       "repetitions; every echo chart has the same y range.\n")
        for mode in ("pingpong", "stream"):
            if (pl, mode) not in bar_charts:
                continue
            brows = bar_charts[(pl, mode)]
            img = charts.bars(f"echo_{pl}_{mode}", f"echo {mode}, {pl}: {bar_what}",
                              bar_ylabel, servers, brows,
                              ymax=shared_ymax or bar_chart_top([brows]),
                              refline=1 if bar_ratio else 0)
            if img:
                out.append(f"![echo {mode} {pl}]({img})\n")
    return "\n".join(out)


def bar_row(label, groups, floor, as_ratio, unit):
    """One cluster of a bar chart: per server (groups, None where missing) the median and
    min–max of per_cpu_s. As ratios to the floor's median when as_ratio: the clusters then
    share one scale whatever their message size (a 4 KiB stream moves an eighth of the
    messages of a 512 B one), the floor's own bar is 1, and the floor's absolute figure
    goes into the label. Otherwise in millions."""
    base = floor.med("per_cpu_s") if (as_ratio and floor) else None
    if as_ratio:
        label += f"\nfloor {si(base)} {unit}/CPU-s" if base else "\n(no floor)"
    div = base if as_ratio else 1e6
    vals = []
    for x in groups:
        m = x.med("per_cpu_s") if x else None
        if m is None or not div:
            vals.append((None, None, None))
        else:
            lo, hi = x.spread("per_cpu_s")
            vals.append((m / div, lo / div, hi / div))
    return label, vals


def bar_chart_top(charts_rows):
    """The y-axis top shared by bar charts: above the highest error bar of any of them."""
    tops = [v for rows in charts_rows for _, vals in rows for t in vals for v in t
            if v is not None]
    return nice_top(max(tops)) if tops else 0


def http_section(rows, charts):
    rows = [r for r in rows if r["bench"] == "http"]
    if not rows:
        return None
    g = group(rows, ["placement", "tool", "server"])
    placements = [p for p in ("pin1", "loops2") if any(k[0] == p for k in g)]
    servers = [s for s in HTTP_SERVERS if any(k[2] == s for k in g)]
    tools = [t for t in ("wrk", "h2load") if any(k[1] == t for k in g)]
    conns = rows[0]["conns"]
    out = [f"GET /plaintext (13-byte body), {conns} conns, 16 requests pipelined per conn "
           "(wrk with bench/wrk_pipeline.lua; h2load --h1 -m 16).\n"]
    hrows = []
    peers = [s for s in servers if s not in HTTP_CGNET]
    for pl in placements:
        for t in tools:
            for base, backend in HTTP_CGNET.items():
                cg = g.get((pl, t, base))
                if cg is None:
                    continue
                cells = [pl, t, backend]
                for s in peers:
                    p = g.get((pl, t, s))
                    cells.append(ratio(cg.med("per_cpu_s"), p.med("per_cpu_s") if p else None))
                fl = g.get((pl, t, "floor_http"))
                cells.append(ratio(cg.med("per_sys_cpu_s"), fl.med("per_sys_cpu_s") if fl else None))
                cells.append(ratio(cg.med("thr"), fl.med("thr") if fl else None))
                hrows.append(cells)
    out.append("cgnet's requests per server-CPU-second divided by each peer's, and its "
               "throughput divided by the floor's:\n")
    out.append(table(["placement", "tool", "cgnet on"]
                     + [f"vs {LABEL.get(s, s)} (per CPU-s)" for s in peers]
                     + ["vs floor (per server+load CPU-s)", "vs floor (req/s)"], hrows))
    out.append("")
    drows = []
    for pl in placements:
        for t in tools:
            for s in servers:
                x = g.get((pl, t, s))
                if x is None:
                    continue
                drows.append([pl, t, LABEL.get(s, s), spread_txt(x, "thr"), cores(x, "cpu_util"),
                              spread_txt(x, "per_cpu_s"), si(x.med("per_sys_cpu_s")),
                              us(x.med("p50_us")), us(x.med("p99_us")),
                              mib(x.med("hwm_kb")), cores(x, "other_util"),
                              runs_txt(x, "err/non-2xx")])
    out.append(table(["placement", "tool", "server", "req/s", "server CPU (cores)",
                      "req per server-CPU-s", "per server+load CPU-s", "p50", "p99",
                      "peak RSS MiB", "other CPU",
                      "clean runs"], drows))
    out.append("\n(Other CPU: cores busy outside the server and the load tool during the "
               f"window — neighbours on this shared machine; above {MAX_OTHER} a run is noisy and "
               "left out of the medians. p50/p99 from wrk's latency distribution, which with pipelining times whole "
               "batches; h2load prints no percentiles. Peak RSS sums nginx's master and workers.)\n")
    ratio_bars = "floor_http" in servers
    brows = [bar_row(f"{pl} {t}", [g.get((pl, t, s)) for s in servers],
                     g.get((pl, t, "floor_http")), ratio_bars, "req")
             for pl in placements for t in tools]
    if ratio_bars:
        what, ylabel = "relative to the floor", "per server-CPU-s, floor = 1"
    else:
        what, ylabel = "", "million req per server-CPU-s"
    img = charts.bars("http", f"HTTP plaintext, pipelined: requests per server-CPU-second {what}",
                      ylabel, [LABEL.get(s, s) for s in servers], brows,
                      ymax=bar_chart_top([brows]), refline=1 if ratio_bars else 0)
    if img:
        out.append(f"![http]({img})\n")
    return "\n".join(out)


def sweep_section(sweep_dir, charts):
    rows = read_tsv(os.path.join(sweep_dir, "sweep.tsv"))
    if not rows:
        return None
    for r in rows:
        t = num(r.get("thr"))
        r["mbps"] = str(t * int(r["size"]) / 1e6) if t is not None else "NA"
    g = group(rows, ["conns", "size", "server"])
    servers = [s for s in ECHO_SERVERS if any(k[2] == s for k in g)]
    conns = sorted({int(k[0]) for k in g})
    sizes = sorted({int(k[1]) for k in g})
    pl = rows[0].get("placement", "?")
    reps = max(int(r["rep"]) for r in rows)
    mode = rows[0].get("mode", "stream")
    what = "Streaming echo" if mode == "stream" else f"Echo, {mode} mode"
    out = [f"{what} (echoload -m {mode}), placement {pl}, {reps} repetition(s) per point; "
           f"results: `{os.path.relpath(sweep_dir, ROOT)}`. Echoed MB/s (10^6 bytes), median:\n"]

    def cell(c, s, srv, key="mbps"):
        x = g.get((str(c), str(s), srv))
        return x.med(key) if x else None

    for srv in servers:
        trows = [[f"{c}"] + [f"{cell(c, s, srv):.0f}" if cell(c, s, srv) else "–" for s in sizes]
                 for c in conns]
        out.append(f"**{srv}**\n")
        out.append(table(["conns \\ size"] + [size_txt(s) for s in sizes], trows))
        out.append("")
    if "cgnet" in servers and "floor" in servers:
        trows = []
        for c in conns:
            trows.append([f"{c}"] + [ratio(cell(c, s, "cgnet", "per_cpu_s"), cell(c, s, "floor", "per_cpu_s"))
                                     for s in sizes])
        out.append("**cgnet ÷ floor, messages per server-CPU-second**\n")
        out.append(table(["conns \\ size"] + [size_txt(s) for s in sizes], trows))
        out.append("")
    panels = [(srv, [(size_txt(s), [(c, cell(c, s, srv)) for c in conns]) for s in sizes])
              for srv in servers]
    img = charts.lines("sweep_conns", f"echo {mode}: throughput vs connections", "connections",
                       "echoed MB/s", panels, logx=10, xtics=conns)
    if img:
        out.append(f"![throughput vs connections]({img})\n")
    panels = [(f"{c}_conns", [(srv, [(s, cell(c, s, srv)) for s in sizes]) for srv in servers])
              for c in (conns[0], conns[-1])] if conns else []
    img = charts.lines("sweep_size", f"echo {mode}: throughput vs message size",
                       "message size (bytes)", "echoed MB/s", panels, logx=2)
    if img:
        out.append(f"![throughput vs message size]({img})\n")
    return "\n".join(out)


def regress_section(regress_dir):
    rows = read_tsv(os.path.join(regress_dir, "regress.tsv"))
    if not rows:
        return None
    by = {}
    for r in rows:
        by.setdefault(r["metric"], {})[r["server"]] = r
    servers = sorted({r["server"] for r in rows},
                     key=lambda s: (s != "cgnet", s != "cgnet_uring", s))
    knobs = {}
    kp = os.path.join(regress_dir, "knobs.txt")
    if os.path.isfile(kp):
        for line in open(kp):
            k, _, v = line.rstrip("\n").partition("=")
            knobs[k] = v
    out = [f"Echo pingpong, {knobs.get('REGRESS_CONNS', '100')} conns, "
           f"{knobs.get('REGRESS_SIZE', '512')} B, server with 1 loop on CPU 0, echoload on CPU 1; "
           f"a {knobs.get('REGRESS_SECS', '3')} s run minus a 0.1 s run, so start-up, accepts and "
           f"shutdown cancel out. Results: `{os.path.relpath(regress_dir, ROOT)}`.\n"]
    trows = []
    def calls(m):
        return -max(num(r["value"]) or 0 for r in by[m].values())

    metrics = ["ir_per_msg", "syscalls_per_msg", "completions_per_enter"] + sorted(
        (m for m in by if m.startswith("sys_")), key=lambda m: (calls(m), m))
    names = {"ir_per_msg": "user-space instructions per message (callgrind Ir)",
             "syscalls_per_msg": "syscalls per message (strace -c), all",
             "completions_per_enter": "io_uring completions per io_uring_enter"}
    for m in metrics:
        if m not in by:
            continue
        name = names.get(m, "  " + m[4:-8] + " per message")
        trows.append([name] + [by[m][s]["value"] if s in by[m] else "–" for s in servers])
    out.append(table(["figure"] + servers, trows))
    if "ir_per_msg" in by and "cgnet" in by["ir_per_msg"] and "floor" in by["ir_per_msg"]:
        a, b = num(by["ir_per_msg"]["cgnet"]["value"]), num(by["ir_per_msg"]["floor"]["value"])
        if a and b:
            out.append(f"\ncgnet runs {a / b:.1f}× the floor's user-space instructions per echoed "
                       f"message. Regenerate with `bash bench/run.sh regress`.\n")
    return "\n".join(out)


UDP_SERVERS = ["floor_udp", "cgnet_udp", "cgnet_udp_sessions"]


def udp_section(udp_dir):
    """UDP echo: datagrams per server-CPU-second of each server, and the ratios that say
    what sessions cost (sessions over per-datagram conns) and what cgnet costs over the
    floor."""
    rows = [r for r in read_tsv(os.path.join(udp_dir, "udp.tsv")) if r.get("bench") == "udp"]
    if not rows:
        return None
    g = group(rows, ["placement", "conns", "size", "server"])
    out = [f"UDP echo by `build/bench/udpload` (every datagram checked; lost ones counted), "
           f"the servers' CPU measured in a window inside the load as for echo. Results: "
           f"`{os.path.relpath(udp_dir, ROOT)}`.\n"]
    trows, rrows = [], []
    configs = sorted({k[:3] for k in g}, key=lambda k: (k[0] != "pin1", int(k[1]), int(k[2])))
    for pl, conns, size in configs:
        cell = {s: g.get((pl, conns, size, s)) for s in UDP_SERVERS}
        for s in UDP_SERVERS:
            x = cell[s]
            if x is None:
                continue
            lost = sum(num(r.get("lost")) or 0 for r in x.ok)
            trows.append([f"{pl}, {conns} sockets, {size} B", s, si(x.med("thr")),
                          f"{x.med('cpu_util'):.2f}" if x.med("cpu_util") is not None else "–",
                          spread_txt(x, "per_cpu_s"), f"{lost:.0f}",
                          f"{len(x.ok)}/{len(x.rows)}"])
        def per(s):
            x = cell.get(s)
            return x.med("per_cpu_s") if x else None
        rrows.append([f"{pl}, {conns} sockets, {size} B",
                      ratio(per("cgnet_udp_sessions"), per("cgnet_udp")),
                      ratio(per("cgnet_udp"), per("floor_udp")),
                      ratio(per("cgnet_udp_sessions"), per("floor_udp"))])
    out.append(table(["config", "sessions vs per-datagram conns", "per-datagram vs floor",
                      "sessions vs floor"], rrows))
    out.append("\nRatios of datagrams per server-CPU-second (medians).\n")
    out.append("<details><summary>All figures (median, min–max over repetitions)</summary>\n")
    out.append(table(["config", "server", "datagrams/s", "server CPU (cores)",
                      "per server-CPU-s", "lost (clean runs)", "clean runs"], trows))
    out.append("\n</details>\n")
    return "\n".join(out)


WS_SERVERS = ["cgnet_ws", "cgnet_raw", "node_ws", "python_websockets"]
WS_SINGLE_THREADED = ("node_ws", "python_websockets")


def ws_section(ws_dir):
    """WebSocket echo: messages per server-CPU-second of each server, and cgnet_ws's ratio
    to the same echo on raw conns (the WebSocket layer's cost) and to the Node and Python
    peers."""
    rows = [r for r in read_tsv(os.path.join(ws_dir, "ws.tsv")) if r.get("bench") == "ws"]
    if not rows:
        return None
    g = group(rows, ["placement", "mode", "conns", "size", "server"])
    out = [f"WebSocket echo by `build/bench/wsload` (binary messages, every payload byte "
           f"checked; cgnet_raw is `examples/echo` driven by `wsload --raw`, the same echo "
           f"without WebSocket), the servers' CPU measured in a window inside the load as "
           f"for echo. node_ws and python_websockets run on one thread: in loops2 cgnet has "
           f"2 loops and they have one. Results: `{os.path.relpath(ws_dir, ROOT)}`.\n"]
    trows, rrows = [], []
    configs = sorted({k[:4] for k in g},
                     key=lambda k: (k[0] != "pin1", k[1], int(k[2]), int(k[3])))
    for pl, mode, conns, size in configs:
        label = f"{pl}, {mode}, {conns} conns, {size_txt(size)}"
        cell = {s: g.get((pl, mode, conns, size, s)) for s in WS_SERVERS}
        for s in WS_SERVERS:
            x = cell[s]
            if x is None:
                continue
            name = s + (" (1 thread)" if pl != "pin1" and s in WS_SINGLE_THREADED else "")
            trows.append([label, name, si(x.med("thr")), cores(x, "cpu_util"),
                          spread_txt(x, "per_cpu_s"), us(x.med("p50_us")),
                          us(x.med("p99_us")), runs_txt(x)])

        def per(s):
            x = cell.get(s)
            return x.med("per_cpu_s") if x else None
        rrows.append([label, ratio(per("cgnet_ws"), per("cgnet_raw")),
                      ratio(per("cgnet_ws"), per("node_ws")),
                      ratio(per("cgnet_ws"), per("python_websockets"))])
    out.append(table(["config", "cgnet_ws ÷ cgnet_raw", "cgnet_ws ÷ node_ws",
                      "cgnet_ws ÷ python_websockets"], rrows))
    out.append("\nRatios of messages per server-CPU-second (medians). The first says what the "
               "WebSocket layer costs over raw conns (the aim: at least 0.85 at 64 B).\n")
    out.append("<details><summary>All figures (median, min–max over repetitions)</summary>\n")
    out.append(table(["config", "server", "msgs/s", "server CPU (cores)", "per server-CPU-s",
                      "p50", "p99", "clean runs"], trows))
    out.append("\n</details>\n")
    return "\n".join(out)
TLS_HS_SERVERS = ["cgnet_tls", "cgnet_tls_uring", "nginx_tls", "h2o_tls"]
TLS_HTTPS_SERVERS = ["cgnet_https", "cgnet_https_uring", "nginx_tls", "h2o_tls"]
TLS_ECHO_SERVERS = ["cgnet_tls", "cgnet_tls_uring", "libevent_tls", "cgnet"]
TLS_PROXY_SERVERS = ["cgnet_tls_proxy", "nginx_tls_proxy"]
TLS_IDLE_SERVERS = ["cgnet_tls", "cgnet"]
COLOR.update({"cgnet_tls": COLOR["cgnet"], "cgnet_tls_uring": COLOR["cgnet_uring"],
              "cgnet_https": COLOR["cgnet"], "cgnet_https_uring": COLOR["cgnet_uring"],
              "nginx_tls": COLOR["nginx"], "h2o_tls": COLOR["h2o"],
              "libevent_tls": COLOR["libevent"], "cgnet_tls_proxy": COLOR["cgnet"],
              "nginx_tls_proxy": COLOR["nginx"]})


def tls_knobs(tls_dir):
    knobs = {}
    path = os.path.join(tls_dir, "knobs.txt")
    if os.path.isfile(path):
        for line in open(path):
            k, _, v = line.rstrip("\n").partition("=")
            knobs[k] = v
    return knobs


def tls_peer_table(g, configs, servers, cgnets, peers, label):
    """Per configuration: each server's messages per server-CPU-second (median and
    spread) and the ratio of each cgnet server to each peer (medians)."""
    head = ["config"] + servers + [f"{c} ÷ {p}" for c in cgnets for p in peers]
    rows = []
    for cfg in configs:
        cell = {s: g.get(cfg + (s,)) for s in servers}
        per = {s: (cell[s].med("per_cpu_s") if cell[s] else None) for s in servers}
        rows.append([label(cfg)] + [spread_txt(cell[s], "per_cpu_s") if cell[s] else "–"
                                    for s in servers]
                    + [ratio(per[c], per[p]) for c in cgnets for p in peers])
    return table(head, rows)


def tls_detail_table(g, configs, servers, label, unit):
    rows = []
    for cfg in configs:
        for s in servers:
            x = g.get(cfg + (s,))
            if x is None:
                continue
            rows.append([label(cfg), s, spread_txt(x, "thr"), cores(x, "cpu_util"),
                         spread_txt(x, "per_cpu_s"), us(x.med("p50_us")), us(x.med("p99_us")),
                         runs_txt(x)])
    return table(["config", "server", f"{unit}/s", "server CPU (cores)",
                  f"{unit} per server-CPU-s", "p50", "p99", "clean runs"], rows)


def hs_config_label(bench):
    """handshake_ecdsa -> ECDSA; handshake_ecdsa_tickets -> ECDSA + tickets."""
    cfg = bench.split("_", 1)[1]
    key, _, tickets = cfg.partition("_")
    return key.upper() + (" + tickets" if tickets == "tickets" else "")


def tls_probe_table(path):
    if not has_rows(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return table(["server", "configuration", "protocol", "suite", "group",
                  "TLS 1.3 tickets sent"],
                 [[r["server"], hs_config_label("handshake_" + r["key"]), r["protocol"] or "–",
                   r["cipher"] or "–",
                   r["group"] or "–", r["tickets"]] for r in rows])


def tls_idle_table(path):
    if not has_rows(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    g = {}
    for r in rows:
        g.setdefault((r["placement"], r["conns"], r["server"]), []).append(r)
    out = []
    for (pl, conns, s), rs in sorted(g.items(),
                                     key=lambda kv: (kv[0][0] != "pin1", kv[0][2] == "cgnet")):
        ok = [r for r in rs if r["status"] == "ok" and num(r["bytes_per_conn"]) is not None]
        per = [num(r["bytes_per_conn"]) for r in ok]
        before = [num(r["rss_before_kb"]) for r in ok]
        idle = [num(r["rss_idle_kb"]) for r in ok]
        if per:
            m = statistics.median(per)
            txt = f"{m:,.0f}" + (f" ({min(per):,.0f}–{max(per):,.0f})" if len(per) > 1 else "")
        else:
            txt = "–"
        out.append([pl, f"{int(conns):,}", s,
                    mib(statistics.median(before)) if before else "–",
                    mib(statistics.median(idle)) if idle else "–", txt,
                    f"{len(ok)}/{len(rs)}"])
    return table(["placement", "idle conns", "server", "RSS before (MiB)", "RSS idle (MiB)",
                  "bytes per idle conn", "clean runs"], out)


def tls_echo_configs(g):
    """The (mode, size, placement) configurations of a TLS echo or proxy group: ping-pong
    first, then by size, pin1 before loops2."""
    order = {"pin1": 0, "loops2": 1}
    return sorted({k[:3] for k in g},
                  key=lambda k: (k[0] != "pingpong", int(k[1]), order.get(k[2], 9)))


def tls_echo_label(c):
    return f"{c[0]}, {size_txt(c[1])}, {c[2]}"


def tls_echo_section(rows, bench, server_order, cgnets, peers, heading, note, what):
    """The tlsload echo rows of one bench (tls_echo, tls_proxy): per server-CPU-second
    with cgnet's ratios to its peers, and the details. `note` follows "N conns" under the
    table. A list of parts ([] without rows)."""
    mine = [r for r in rows if r["bench"] == bench]
    if not mine:
        return []
    g = group(mine, ["mode", "size", "placement", "server"])
    configs = tls_echo_configs(g)
    servers = [s for s in server_order if any(k[3] == s for k in g)]
    return [f"### {heading}\n",
            tls_peer_table(g, configs, servers, [s for s in cgnets if s in servers],
                           [s for s in peers if s in servers], tls_echo_label),
            f"\n{mine[0]['conns']} conns{note}\n",
            f"<details><summary>All {what} figures (median, min–max)</summary>\n",
            tls_detail_table(g, configs, servers, tls_echo_label, "msgs"),
            "\n</details>\n"]


def tls_section(tls_dir, charts):
    """TLS: full handshakes, HTTPS pipelined, TLS echo and TLS termination by a proxy per
    server-CPU-second with cgnet's ratios to its peers (nginx and h2o; libevent and plain
    cgnet for echo; nginx's stream proxy for the proxy), and the server memory per idle
    TLS conn."""
    path = os.path.join(tls_dir, "tls.tsv")
    rows = read_tsv(path) if has_rows(path) else []
    out = [f"TLS by `build/bench/tlsload` (handshakes, TLS echo, the proxies, idle conns; "
           f"every echoed "
           f"byte checked), wrk and h2load (HTTPS), the servers' CPU measured in a window "
           f"inside the load as for echo; figures per server-CPU-second. Results: "
           f"`{os.path.relpath(tls_dir, ROOT)}`.\n"]
    order = {"pin1": 0, "loops2": 1}

    hs = [r for r in rows if r["bench"].startswith("handshake_")]
    if hs:
        g = group(hs, ["bench", "placement", "server"])
        configs = sorted({k[:2] for k in g}, key=lambda k: (k[0], order.get(k[1], 9)))
        servers = [s for s in TLS_HS_SERVERS if any(k[2] == s for k in g)]
        label = lambda c: f"{hs_config_label(c[0])}, {c[1]}"
        out.append("### Full TLS 1.3 handshakes per server-CPU-second\n")
        out.append(tls_peer_table(g, configs, servers,
                                  [s for s in ("cgnet_tls", "cgnet_tls_uring") if s in servers],
                                  [s for s in ("nginx_tls", "h2o_tls") if s in servers], label))
        out.append(f"\n`tlsload -m handshake -c {hs[0]['conns']}`: connect, full handshake "
                   f"(no session cache, no ticket offered), close, again. The servers issue "
                   f"no session tickets, except in the rows marked *tickets*, where each "
                   f"issues them its own way (see the table below).\n")
        if charts.ok:
            def k(v):
                return None if v is None else v / 1e3

            def bar(x):
                if x is None:
                    return (None, None, None)
                return (k(x.med("per_cpu_s")),) + tuple(k(v) for v in x.spread("per_cpu_s"))

            bars = [(label(c).replace(", ", "\\n"), [bar(g.get(c + (s,))) for s in servers])
                    for c in configs]
            img = charts.bars("tls_handshakes", "Full TLS 1.3 handshakes per server-CPU-second",
                              "thousand handshakes per server-CPU-s", servers, bars)
            if img:
                out.append(f"![TLS handshakes]({img})\n")
        out.append("<details><summary>All handshake figures (median, min–max)</summary>\n")
        out.append(tls_detail_table(g, configs, servers, label, "handshakes"))
        out.append("\n</details>\n")
        probe = tls_probe_table(os.path.join(tls_dir, "tls_probe.tsv"))
        if probe:
            out.append("What each server negotiated with `openssl s_client -tls1_3`, and the "
                       "session tickets it sends after a handshake (the client never uses "
                       "them; without *tickets*, nginx's and h2o's two are session IDs that "
                       "no cache keeps):\n")
            out.append(probe + "\n")

    https = [r for r in rows if r["bench"] == "https"]
    if https:
        g = group(https, ["tool", "placement", "server"])
        configs = sorted({k[:2] for k in g}, key=lambda k: (k[0] != "wrk", order.get(k[1], 9)))
        servers = [s for s in TLS_HTTPS_SERVERS if any(k[2] == s for k in g)]
        out.append("### HTTPS pipelined requests per server-CPU-second\n")
        out.append(tls_peer_table(
            g, configs, servers,
            [s for s in ("cgnet_https", "cgnet_https_uring") if s in servers],
            [s for s in ("nginx_tls", "h2o_tls") if s in servers], lambda c: f"{c[0]}, {c[1]}"))
        depth = tls_knobs(tls_dir).get("HTTP_DEPTH") or "?"
        out.append(f"\n{https[0]['conns']} conns, {depth} requests in flight per conn, ECDSA "
                   f"certificate.\n")
        out.append("<details><summary>All HTTPS figures (median, min–max)</summary>\n")
        out.append(tls_detail_table(g, configs, servers, lambda c: f"{c[0]}, {c[1]}", "requests"))
        out.append("\n</details>\n")

    out += tls_echo_section(
        rows, "tls_echo", TLS_ECHO_SERVERS, ("cgnet_tls", "cgnet_tls_uring"),
        ("cgnet", "libevent_tls"), "TLS echo messages per server-CPU-second",
        "; `libevent_tls` is libevent's bufferevent_openssl echo (`bench/echo_libevent.c "
        "--cert --key`); `cgnet` is plain TCP (`tlsload --plain`), so cgnet_tls ÷ cgnet is "
        "what TLS leaves of the plain figure.", "TLS echo")
    out += tls_echo_section(
        rows, "tls_proxy", TLS_PROXY_SERVERS, ("cgnet_tls_proxy",), ("nginx_tls_proxy",),
        "TLS-terminating proxy: echoed messages per proxy-CPU-second",
        " through the proxy (TLS in, plain TCP out) to a plain echo backend "
        "(`bench/floor_echo`, pinned to CPU 1 with the load); only the proxy's CPU is "
        "counted. `cgnet_tls_proxy` is `examples/proxy`, `nginx_tls_proxy` nginx's stream "
        "module (`bench/nginx_tls_proxy.conf.in`); h2o has no TCP proxy.", "TLS proxy")

    idle = tls_idle_table(os.path.join(tls_dir, "tls_idle.tsv"))
    if idle:
        out.append("### Server memory per idle conn\n")
        out.append(idle)
        out.append("\nServer VmRSS before the conns and once all are idle (each had its "
                   "handshake and one echo); bytes per conn = the difference / conns.\n")
    return "\n".join(out) if len(out) > 1 else None


def replace_section(doc, name, body):
    begin, end = f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if pat.search(doc):
        return pat.sub(lambda _: block, doc)
    return doc.rstrip() + f"\n\n{block}\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run")
    ap.add_argument("--sweep")
    ap.add_argument("--regress")
    ap.add_argument("--udp")
    ap.add_argument("--ws")
    ap.add_argument("--tls")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--img", default=os.path.join(ROOT, "docs", "img"))
    a = ap.parse_args()
    run_dir = a.run or newest("results.tsv")
    sweep_dir = a.sweep or newest("sweep.tsv")
    regress_dir = a.regress or newest("regress.tsv")
    udp_dir = a.udp or newest("udp.tsv")
    if a.run and not a.udp and has_rows(os.path.join(a.run, "udp.tsv")):
        udp_dir = a.run
    ws_dir = a.ws or newest("ws.tsv")
    if a.run and not a.ws and has_rows(os.path.join(a.run, "ws.tsv")):
        ws_dir = a.run
    if a.run and not a.regress and has_rows(os.path.join(a.run, "regress.tsv")):
        regress_dir = a.run
    tls_dir = a.tls or newest("tls.tsv") or newest("tls_idle.tsv")
    if a.run and not a.tls and (has_rows(os.path.join(a.run, "tls.tsv"))
                                or has_rows(os.path.join(a.run, "tls_idle.tsv"))):
        tls_dir = a.run

    doc = open(a.doc).read() if os.path.isfile(a.doc) else "# Benchmarks\n"
    sections = {}
    if run_dir and has_rows(os.path.join(run_dir, "results.tsv")):
        rows = read_tsv(os.path.join(run_dir, "results.tsv"))
        charts = Charts(a.img, run_dir)
        sections["machine"] = machine_section(run_dir)
        sections["echo"] = echo_section(rows, charts)
        sections["http"] = http_section(rows, charts)
        if not charts.ok:
            print("report.py: gnuplot not found: no charts (apt-get install gnuplot-nox)",
                  file=sys.stderr)
    if sweep_dir and has_rows(os.path.join(sweep_dir, "sweep.tsv")):
        sections["sweep"] = sweep_section(sweep_dir, Charts(a.img, sweep_dir))
    if regress_dir and has_rows(os.path.join(regress_dir, "regress.tsv")):
        sections["regress"] = regress_section(regress_dir)
    if udp_dir and has_rows(os.path.join(udp_dir, "udp.tsv")):
        sections["udp"] = udp_section(udp_dir)
    if ws_dir and has_rows(os.path.join(ws_dir, "ws.tsv")):
        sections["ws"] = ws_section(ws_dir)
    if tls_dir:
        sections["tls"] = tls_section(tls_dir, Charts(a.img, tls_dir))
    for name, body in sections.items():
        if body:
            doc = replace_section(doc, name, body)
    os.makedirs(os.path.dirname(a.doc), exist_ok=True)
    with open(a.doc, "w") as f:
        f.write(doc)
    done = [n for n, b in sections.items() if b]
    print(f"report.py: {os.path.relpath(a.doc)}: updated {', '.join(done) or 'nothing'}"
          f" (run {run_dir}, sweep {sweep_dir}, regress {regress_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
