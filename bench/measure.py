#!/usr/bin/env python3
"""measure.py — run one load tool against a running server and measure the server.

    measure.py --pid PID --tool echoload|wsload|tlsload|wrk|h2load|udpload --win A B
               --raw FILE [--mark TEXT] [--helper PID] -- CMD...

Runs CMD (its stdout and stderr go to FILE) and, meanwhile, samples the CPU time of the
server: PID and every process below it (nginx workers), all threads included, as
utime+stime from /proc/<pid>/stat in clock ticks over sysconf(SC_CLK_TCK).

Two CPU figures:
  cpu_total_s  from just before CMD starts to just after it exits (connects, warm-up,
               measured window and drain all included);
  cpu_win_s    over the window [t0+A, t0+B] after the launch at t0, which the caller
               places inside the tool's steady load (after its connects and warm-up,
               before its drain); with --mark TEXT, t0 is instead the moment TEXT
               first shows in the tool's output (wsload prints one when its conns are
               open and the load starts: upgrading 1,000 WebSockets to a slow server can
               take seconds). cpu_util = cpu_win_s / win_s is the number of cores the
               server kept busy under load, and per_cpu_s = throughput / cpu_util is
               messages (or requests) per server-CPU-second — the fair figure on a
               machine where the server and the load generator share 2 cores.

Over the same window it also reports load_util, the cores the load tool kept busy, and
other_util, the cores busy with anything else (other processes, and interrupt time the
kernel does not charge to a process): a noisy neighbour shows up there. --helper PID
names a process the run itself needs beside the server (the echo backend behind the TLS
proxies): its process tree's CPU is left out of other_util, so that it does not make the
run look noisy, and printed as helper_util (not a column of the results files).

After CMD exits (the server still running) it reads the peak RSS, VmHWM summed over the
same processes. Then it parses the tool's output and prints one line of key=value pairs
(the fields bench/run.sh writes to its results file). Exit status: that of CMD, or 125 if
CMD could not be started.
"""
import argparse
import os
import re
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_table():
    """{pid: (ppid, utime+stime ticks)} for every process we can read."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # comm (field 2) may hold spaces and parentheses: split after the last ')'.
        rest = data[data.rindex(")") + 2 :].split()
        # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
        table[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def tree(pid, table):
    """pid and all its descendants present in table."""
    children = {}
    for p, (pp, _) in table.items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in table:
            out.append(p)
            todo.extend(children.get(p, []))
    return out


def tree_ticks(pid):
    table = proc_table()
    return sum(table[p][1] for p in tree(pid, table))


def busy_ticks():
    """All CPUs' non-idle time from /proc/stat (user nice system irq softirq steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def tree_hwm_kb(pid):
    total = 0
    for p in tree(pid, proc_table()):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---- tool output parsers: each returns thr (per s), msgs, secs, p50_us, p99_us, errors,
# non2xx; None where the tool does not say. ------------------------------------------


def parse_echoload(text):
    line = next((l for l in reversed(text.splitlines()) if l.startswith("RESULT ")), None)
    if line is None:
        return {}
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)

    def num(k):
        v = kv.get(k)
        return None if v in (None, "na") else float(v)

    errors = (num("errors") or 0) + (num("connect_errors") or 0)
    if kv.get("connected") and kv.get("conns") and kv["connected"] != kv["conns"]:
        errors += float(kv["conns"]) - float(kv["connected"])
    return {
        "thr": num("msgs_per_s"),
        "msgs": num("msgs"),
        "secs": num("secs"),
        "mb_per_s": num("mb_per_s"),
        "p50_us": num("p50_us"),
        "p99_us": num("p99_us"),
        "errors": errors,
        "non2xx": 0,
    }


UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def dur_us(s):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", s)
    return float(m.group(1)) * UNIT_US[m.group(2)] if m else None


def parse_wrk(text):
    out = {"non2xx": 0, "errors": 0}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m)", text, re.M)
    if m:
        out["msgs"] = float(m.group(1))
        out["secs"] = float(m.group(2)) * UNIT_US[m.group(3)] / 1e6
    m = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    if m:
        out["thr"] = float(m.group(1))
    pct = {}
    for m in re.finditer(r"^\s*(50|75|90|99)%\s+(\S+)", text, re.M):
        pct[int(m.group(1))] = dur_us(m.group(2))
    # wrk 4.1 records one latency sample per pipelined batch and, with few samples, its
    # percentile walk can come back with 0 for the upper ranks: report those as unknown.
    p50, p99 = pct.get(50), pct.get(99)
    out["p50_us"] = p50 if p50 else None
    out["p99_us"] = p99 if p99 and (p50 is None or p99 >= p50) else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def parse_h2load(text):
    out = {"p50_us": None, "p99_us": None}
    m = re.search(r"finished in ([0-9.]+)(us|ms|s|m), ([0-9.]+) req/s", text)
    if m:
        out["secs"] = float(m.group(1)) * UNIT_US[m.group(2)] / 1e6
        out["thr"] = float(m.group(3))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        out["msgs"] = float(m.group(4))
        out["errors"] = int(m.group(5))  # failed = errored + timed out + unfinished
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["non2xx"] = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        out["mean_us"] = dur_us(m.group(3))
    return out


def parse_udpload(text):
    line = next((l for l in reversed(text.splitlines()) if l.startswith("udpload: datagrams=")),
                None)
    if line is None:
        return {}
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    return {
        "thr": num_or_none(kv.get("datagrams_per_s")),
        "msgs": num_or_none(kv.get("datagrams")),
        "secs": num_or_none(kv.get("seconds")),
        "errors": num_or_none(kv.get("bad")),  # a datagram echoed wrong
        "non2xx": 0,
        "lost": num_or_none(kv.get("lost")),   # UDP may lose; counted, not an error
    }


def num_or_none(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# wsload and tlsload print echoload's RESULT line (their messages are WebSocket
# messages; tlsload's are handshakes in its handshake mode).
PARSERS = {"echoload": parse_echoload, "wsload": parse_echoload, "tlsload": parse_echoload,
           "wrk": parse_wrk,
           "h2load": parse_h2load, "udpload": parse_udpload}


def fmt(v):
    if v is None:
        return "NA"
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e6 else f"{v:.0f}"
    return str(v)


def wait_mark(path, text, proc):
    """When text first shows in the file path (the tool's output), polled every 10 ms;
    the time the tool exited if it never does."""
    want = text.encode()
    while True:
        with open(path, "rb") as f:
            if want in f.read():
                return time.monotonic()
        if proc.poll() is not None:
            return time.monotonic()
        time.sleep(0.01)


def sleep_until(t, proc):
    while True:
        left = t - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            return
        time.sleep(min(left, 0.05))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--tool", choices=PARSERS, required=True)
    ap.add_argument("--win", type=float, nargs=2, metavar=("A", "B"), required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--mark", help="count the window from when the output shows this text")
    ap.add_argument("--helper", type=int, help="a process the run needs beside the server")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")

    c0 = tree_ticks(a.pid)
    with open(a.raw, "wb") as raw:
        raw.write(("# " + " ".join(cmd) + "\n").encode())
        raw.flush()
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdout=raw, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as e:
            print(f"measure.py: cannot run {cmd[0]}: {e}", file=sys.stderr)
            return 125
        t_launch = t0
        if a.mark:
            t0 = wait_mark(a.raw, a.mark, proc)
        sleep_until(t0 + a.win[0], proc)
        ta, ca, la, ba = time.monotonic(), tree_ticks(a.pid), tree_ticks(proc.pid), busy_ticks()
        ha = tree_ticks(a.helper) if a.helper else 0
        sleep_until(t0 + a.win[1], proc)
        tb, cb, lb, bb = time.monotonic(), tree_ticks(a.pid), tree_ticks(proc.pid), busy_ticks()
        hb = tree_ticks(a.helper) if a.helper else 0
        rc = proc.wait()
        t1 = time.monotonic()
    c1 = tree_ticks(a.pid)
    hwm = tree_hwm_kb(a.pid)

    with open(a.raw, errors="replace") as f:
        r = PARSERS[a.tool](f.read())
    win_s = tb - ta
    cpu_win = (cb - ca) / CLK_TCK
    util = cpu_win / win_s if win_s > 0.2 else None
    thr = r.get("thr")
    per_cpu = thr / util if thr is not None and util else None
    fields = {
        "rc": rc,
        "thr": thr,
        "msgs": r.get("msgs"),
        "secs": r.get("secs"),
        "cpu_win_s": cpu_win,
        "win_s": win_s,
        "cpu_util": util,
        "per_cpu_s": per_cpu,
        "cpu_total_s": (c1 - c0) / CLK_TCK,
        "load_util": (lb - la) / CLK_TCK / win_s if win_s > 0.2 else None,
        "other_util": ((bb - ba) - (cb - ca) - (lb - la) - (hb - ha)) / CLK_TCK / win_s
        if win_s > 0.2 else None,
        "wall_s": t1 - t_launch,
        "p50_us": r.get("p50_us"),
        "p99_us": r.get("p99_us"),
        "hwm_kb": hwm,
        "errors": r.get("errors"),
        "non2xx": r.get("non2xx"),
        "lost": r.get("lost"),
    }
    if a.helper:
        fields["helper_util"] = (hb - ha) / CLK_TCK / win_s if win_s > 0.2 else None
    print(" ".join(f"{k}={fmt(v)}" for k, v in fields.items()))
    return rc


if __name__ == "__main__":
    sys.exit(main())
