#!/usr/bin/env python3
"""Turns what the VM test's guest wrote into VM_RESULTS/result.json.

Reads steps.tsv (one "name<TAB>status<TAB>seconds<TAB>message" line per step),
the fio JSON outputs (fio-*.json) and the timing markers, prints a summary
table and exits non-zero if the guest did not finish, a step failed, or the
dataplane/rd_mcp IOPS ratio is below --min-ratio (the file and nvme bdevs'
ratios to iblock below --min-file-ratio and --min-nvme-ratio).
"""

import argparse
import glob
import json
import os
import re
import sys


def load_fio(path):
    """fio's JSON output, skipping any warning lines fio prints before it."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = text.find("{")
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except json.JSONDecodeError:
        return None


def fio_totals(data):
    out = {"errors": 0}
    for ddir in ("read", "write", "trim"):
        out[f"{ddir}_bytes"] = 0
        out[f"{ddir}_iops"] = 0.0
    for job in data.get("jobs", []):
        out["errors"] += int(job.get("error", 0))
        for ddir in ("read", "write", "trim"):
            d = job.get(ddir, {})
            out[f"{ddir}_bytes"] += int(d.get("io_bytes", 0))
            out[f"{ddir}_iops"] += float(d.get("iops", 0.0))
    for ddir in ("read", "write", "trim"):
        out[f"{ddir}_iops"] = round(out[f"{ddir}_iops"], 1)
    # The read completion latency's median: of a single-job run, and of
    # each job by name (a run of several at once, like the QD 1 pair).
    # Also each job's mean completion latency, which fio keeps exactly,
    # where its percentiles are histogram buckets (clat_bucket_us).
    jobs = data.get("jobs", [])
    by_job = {}
    mean_by_job = {}
    for job in jobs:
        clat = job.get("read", {}).get("clat_ns", {})
        p50 = clat.get("percentile", {}).get("50.000000")
        if p50:
            by_job[job.get("jobname")] = round(p50 / 1000, 1)
            mean_by_job[job.get("jobname")] = round(clat.get("mean", 0) / 1000, 1)
    if len(jobs) == 1 and by_job:
        out["read_clat_p50_us"] = next(iter(by_job.values()))
    if len(jobs) > 1:
        out["read_clat_p50_us_by_job"] = by_job
        out["read_clat_mean_us_by_job"] = mean_by_job
    return out


def clat_bucket_us(us):
    """The width of fio's latency histogram bucket holding `us`
    microseconds: fio keeps 64 buckets per power of two (FIO_IO_U_PLAT_BITS
    = 6) of nanoseconds, so its percentiles move in steps of about 1/64 to
    1/128 of the value (2.048 us from 131 to 262 us). Two p50s one bucket
    apart differ by no more than fio can tell."""
    if not us:
        return None
    msb = int(us * 1000).bit_length() - 1
    return round(2 ** max(msb - 6, 0) / 1000, 3)


def median(xs):
    if not xs:
        return None
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else round((xs[mid - 1] + xs[mid]) / 2, 3)


def mean(xs):
    return round(sum(xs) / len(xs), 1) if xs else None


def perf_runs(fio, prefix, key="read_iops"):
    """The fio runs <prefix>-<target>-<round> with read IOPS (or another
    figure of fio_totals, `key`): (runs sorted by round and target,
    {round: {target: figure}}, {target: [figure]})."""
    runs = []
    for name, t in fio.items():
        m = re.fullmatch(re.escape(prefix) + r"-([a-z][a-z0-9_]*)-(\d+)", name)
        if m and key in t:
            runs.append({"target": m.group(1), "round": int(m.group(2)), "iops": t[key]})
    runs.sort(key=lambda r: (r["round"], r["target"]))
    by_round, per_target = {}, {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["target"]] = r["iops"]
        per_target.setdefault(r["target"], []).append(r["iops"])
    return runs, by_round, per_target


def round_ratios(by_round, num, den):
    """num/den IOPS of each round that measured both, in round order."""
    return [
        round(v[num] / v[den], 3)
        for _, v in sorted(by_round.items())
        if v.get(num) and v.get(den)
    ]


def nvme_perf(fio):
    """The perf_nvme step's figures: fio runs perf-nvme-<target>-<round> with
    targets iblock (the in-kernel baseline), raw (the namespace itself) and
    the dataplane's bdevs (file, ...). Each bdev's ratio to iblock is the
    median of its per-round ratios (the two runs of a round are close in
    time)."""
    runs, by_round, per_target = perf_runs(fio, "perf-nvme")
    out = {
        "iblock_iops": mean(per_target.get("iblock", [])),
        "nvme_raw_iops": mean(per_target.get("raw", [])),
        "nvme_perf_rounds": runs,
    }
    ib_raw = round_ratios(by_round, "iblock", "raw")
    out["iblock_round_ratios_vs_raw"] = ib_raw
    out["iblock_vs_raw"] = median(ib_raw)
    for target in sorted(per_target):
        if target in ("iblock", "raw"):
            continue
        ratios = round_ratios(by_round, target, "iblock")
        out[f"{target}_iops"] = mean(per_target[target])
        out[f"{target}_round_ratios"] = ratios
        out[f"{target}_ratio_vs_iblock"] = median(ratios)
    return out


def nvme_info(path):
    """nvme-info lines "device<TAB>attribute<TAB>value" as a nested dict."""
    info = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    continue
                dev, attr, value = parts
                info.setdefault(dev, {})[attr] = int(value) if value.isdigit() else value
    except OSError:
        pass
    return info


def read_float(path):
    try:
        with open(path, encoding="utf-8") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def conformance(res):
    """The conformance steps' outcomes: {lun kind: {passed, failed,
    failed_tests}} from conformance-<kind>.tsv ("test<TAB>pass|fail")."""
    out = {}
    for path in sorted(glob.glob(os.path.join(res, "conformance-*.tsv"))):
        kind = os.path.basename(path)[len("conformance-"):-len(".tsv")]
        passed, failed = 0, []
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 2:
                    continue
                if parts[1] == "pass":
                    passed += 1
                else:
                    failed.append(parts[0])
        out[kind] = {"passed": passed, "failed": len(failed), "failed_tests": failed}
    return out


def scst_perf(fio, res):
    """The scst_perf step's figures: fio runs perf-scst-<target>-<round>
    with targets dp (the dataplane's RAM device), vdisk (vdisk_fileio over
    tmpfs), ftgt (fileio_tgt over tmpfs), dpnull (the dataplane's null bdev)
    and nullio (vdisk_nullio); each ratio is the median of its per-round
    ratios. Also the dataplane's ioctls per I/O at full depth in its runs
    (scst-ioctls-per-io: "ioctls ios"), the kill -9 restart's outage
    (scst-restart-seconds) and how long the hand-off to a successor took
    (scst-handoff-ms). And the QD 1 latency that batching must not cost:
    the median read completion latency of jobs dpb and dpnb of the runs
    perf-scst-qd1pair-<round> (one job on each of two RAM devices alike but
    for batching, the default and off, at the same time), with the median
    of their per-round ratios."""
    # The QD 1 pair's runs (two jobs each) are read below, by job.
    scst_fio = {k: v for k, v in fio.items() if not k.startswith("perf-scst-qd1pair-")}
    runs, by_round, per_target = perf_runs(scst_fio, "perf-scst")
    out = {f"scst_{t}_iops": mean(v) for t, v in sorted(per_target.items())}
    for key, num, den in (
        ("scst_ratio_vs_vdisk", "dp", "vdisk"),
        ("scst_ratio_vs_fileio_tgt", "dp", "ftgt"),
        ("scst_null_ratio_vs_nullio", "dpnull", "nullio"),
    ):
        r = round_ratios(by_round, num, den)
        out[key + "_rounds"] = r
        out[key] = median(r)
    out["scst_perf_rounds"] = runs
    # The QD 1 pair's rounds: {round: fio_totals of its two-job run}.
    pairs = {}
    for name, t in fio.items():
        m = re.fullmatch(r"perf-scst-qd1pair-(\d+)", name)
        if m and "read_clat_p50_us_by_job" in t:
            pairs[int(m.group(1))] = t
    p50_by_round = {r: t["read_clat_p50_us_by_job"] for r, t in pairs.items()}
    out["scst_qd1_p50_us"] = median([v["dpb"] for v in p50_by_round.values() if "dpb" in v])
    out["scst_qd1_unbatched_p50_us"] = median(
        [v["dpnb"] for v in p50_by_round.values() if "dpnb" in v]
    )
    r = round_ratios(p50_by_round, "dpb", "dpnb")
    out["scst_qd1_p50_ratio_vs_unbatched_rounds"] = r
    out["scst_qd1_p50_ratio_vs_unbatched"] = median(r)
    out["scst_qd1_p50_bucket_us"] = clat_bucket_us(out["scst_qd1_unbatched_p50_us"])
    mean_by_round = {r: t["read_clat_mean_us_by_job"] for r, t in pairs.items()}
    r = round_ratios(mean_by_round, "dpb", "dpnb")
    out["scst_qd1_mean_ratio_vs_unbatched_rounds"] = r
    out["scst_qd1_mean_ratio_vs_unbatched"] = median(r)
    out["scst_ioctls_per_io"] = calls_per_io(os.path.join(res, "scst-ioctls-per-io"))
    out["scst_restart_seconds"] = read_float(os.path.join(res, "scst-restart-seconds"))
    out["scst_handoff_ms"] = read_float(os.path.join(res, "scst-handoff-ms"))
    return out


def tcmu_perf(by_round, per_target, median_ratio, res):
    """The perf step's TCMU figures beyond the QD 32 ratio: with serve's
    default configuration (no coalescing window: perf-coalesce-us is 0),
    the QD 32 median round ratio as tcmu_default_ratio_vs_rd_mcp; the QD 1
    rounds (targets dataplane_qd1 and rd_mcp_qd1) as
    tcmu_qd1_ratio_vs_rd_mcp; and the doorbells per I/O of the QD 32 runs
    (tcmu-doorbells-per-io: "doorbells ios")."""
    window = read_float(os.path.join(res, "perf-coalesce-us"))
    qd1 = round_ratios(by_round, "dataplane_qd1", "rd_mcp_qd1")
    out = {
        "perf_completion_coalesce_us": window,
        "tcmu_default_ratio_vs_rd_mcp": median_ratio if window == 0 else None,
        "tcmu_qd1_iops": mean(per_target.get("dataplane_qd1", [])),
        "rd_mcp_qd1_iops": mean(per_target.get("rd_mcp_qd1", [])),
        "tcmu_qd1_round_ratios": qd1,
        "tcmu_qd1_ratio_vs_rd_mcp": median(qd1),
        "tcmu_doorbells_per_io": calls_per_io(os.path.join(res, "tcmu-doorbells-per-io")),
    }
    return out


def calls_per_io(path):
    """Doorbells or ioctls per I/O from a file holding "calls ios", or None."""
    try:
        with open(path, encoding="utf-8") as f:
            calls, ios = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    return round(calls / ios, 3) if ios else None


def load_json(path):
    """A JSON object the guest wrote (e.g. soak.json), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def why(res):
    """Why the run in `res` failed, from the result.json summarizing wrote:
    each problem, then each failed step's message and the end of its log
    (run.sh prints it last, so a log cut to its tail still says it)."""
    r = load_json(os.path.join(res, "result.json"))
    if r is None:
        print(f"[vm] no readable result.json in {res}")
        return 0
    for p in r["problems"]:
        print(f"[vm] PROBLEM: {p}")
    for name, d in r["step_details"].items():
        if d["status"] != "fail":
            continue
        print(f"[vm] step {name} failed after {d['seconds']} s: {d['message']}")
        try:
            with open(os.path.join(res, f"step-{name}.log"), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()[-12:]
        except OSError:
            lines = ["(no step log)"]
        for line in lines:
            print(f"[vm]   | {line}")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--kernel", default="")
    ap.add_argument("--qemu-status", type=int, default=0)
    ap.add_argument("--min-ratio", type=float, default=None)
    ap.add_argument("--min-file-ratio", type=float, default=None)
    ap.add_argument("--min-nvme-ratio", type=float, default=None)
    ap.add_argument("--why", action="store_true",
                    help="only print why a summarized run failed (from its result.json)")
    args = ap.parse_args()
    if args.why:
        return why(args.results)
    res = args.results

    steps, details = {}, {}
    try:
        with open(os.path.join(res, "steps.tsv"), encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 3:
                    continue
                name, status, secs = parts[0], parts[1], parts[2]
                msg = parts[3] if len(parts) > 3 else ""
                steps[name] = status
                details[name] = {"status": status, "seconds": float(secs), "message": msg}
    except OSError:
        pass

    fio = {}
    for path in sorted(glob.glob(os.path.join(res, "fio-*.json"))):
        name = os.path.basename(path)[len("fio-"):-len(".json")]
        data = load_fio(path)
        fio[name] = fio_totals(data) if data else {"unparsable": True}

    rounds, by_round, per_target = perf_runs(fio, "perf")
    dp_iops = mean(per_target.get("dataplane", []))
    rd_iops = mean(per_target.get("rd_mcp", []))
    ratio = round(dp_iops / rd_iops, 3) if dp_iops and rd_iops else None
    # Per-round ratios: the two runs of a round are adjacent in time, so these
    # are the least sensitive to drifts in the host's load.
    dp_round_ratios = round_ratios(by_round, "dataplane", "rd_mcp")
    median_ratio = median(dp_round_ratios)
    tcmu = tcmu_perf(by_round, per_target, median_ratio, res)
    nvme = nvme_perf(fio)
    info = nvme_info(os.path.join(res, "nvme-info"))
    suite = conformance(res)
    soak = load_json(os.path.join(res, "soak.json"))
    scst = scst_perf(fio, res)

    host_start = read_float(os.path.join(res, "host-start"))
    host_end = read_float(os.path.join(res, "host-end"))
    guest_start_path = os.path.join(res, "guest-start")
    guest_done = read_float(os.path.join(res, "guest-done"))
    guest_start = read_float(guest_start_path)
    boot_wall = None
    if host_start is not None and os.path.exists(guest_start_path):
        boot_wall = round(os.path.getmtime(guest_start_path) - host_start, 1)
    durations = {
        "vm_wall_s": round(host_end - host_start, 1) if host_start and host_end else None,
        "boot_wall_s": boot_wall,
        "boot_guest_s": guest_start,
        "guest_tests_s": round(guest_done - guest_start, 1)
        if guest_done is not None and guest_start is not None
        else None,
        "steps_s": {k: v["seconds"] for k, v in details.items()},
    }

    problems = []
    if args.qemu_status != 0:
        problems.append(f"QEMU exited with status {args.qemu_status}")
    if guest_done is None:
        problems.append("the guest did not finish (no guest-done marker)")
    if not steps:
        problems.append("no step results (steps.tsv missing or empty)")
    failed = [k for k, v in steps.items() if v == "fail"]
    if failed:
        problems.append("failed steps: " + ", ".join(failed))
    if args.min_ratio is not None:
        if ratio is None:
            problems.append(f"no IOPS ratio to compare with --min-ratio {args.min_ratio}")
        elif ratio < args.min_ratio:
            problems.append(f"IOPS ratio {ratio} is below {args.min_ratio}")
    for bdev, floor in (("file", args.min_file_ratio), ("nvme", args.min_nvme_ratio)):
        if floor is None:
            continue
        r = nvme.get(f"{bdev}_ratio_vs_iblock")
        if r is None:
            problems.append(f"no {bdev}/iblock ratio to compare with --min-{bdev}-ratio {floor}")
        elif r < floor:
            problems.append(f"{bdev}/iblock IOPS ratio {r} is below {floor}")

    kernel = args.kernel
    try:
        with open(os.path.join(res, "kernel"), encoding="utf-8") as f:
            kernel = f.read().strip() or kernel
    except OSError:
        pass

    result = {
        "passed": not problems,
        "problems": problems,
        "kernel": kernel,
        "selftest": os.environ.get("VM_SELFTEST", "0") == "1",
        "dataplane_iops": dp_iops,
        "rd_mcp_iops": rd_iops,
        "ratio_vs_rd_mcp": ratio,
        "round_ratios": dp_round_ratios,
        "median_round_ratio": median_ratio,
        "perf_rounds": rounds,
        **tcmu,
        **nvme,
        **scst,
        "nvme_lba_size": info.get("nvme0n1", {}).get("logical_block_size"),
        "nvme": info,
        "conformance": suite,
        "soak": soak,
        "steps": steps,
        "step_details": details,
        "fio": fio,
        "durations": durations,
    }
    with open(os.path.join(res, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    print()
    print(f"VM test on kernel {kernel or '?'}")
    print(f"{'step':<26} {'status':<6} {'time':>7}  message")
    for name, d in details.items():
        print(f"{name:<26} {d['status']:<6} {d['seconds']:>6.1f}s  {d['message']}")
    print()

    def fmt(x):
        return "-" if x is None else f"{x:,.0f}"

    print(f"4 KiB randread QD32: dataplane {fmt(dp_iops)} IOPS, rd_mcp {fmt(rd_iops)} IOPS, "
          f"ratio {ratio if ratio is not None else '-'} (per round {dp_round_ratios}, median {median_ratio})")
    print(f"  default configuration (no window): {tcmu['tcmu_default_ratio_vs_rd_mcp']}, "
          f"{tcmu['tcmu_doorbells_per_io']} doorbells/IO; QD1: dataplane {fmt(tcmu['tcmu_qd1_iops'])} IOPS, "
          f"rd_mcp {fmt(tcmu['rd_mcp_qd1_iops'])} IOPS, ratio {tcmu['tcmu_qd1_ratio_vs_rd_mcp']} "
          f"(per round {tcmu['tcmu_qd1_round_ratios']})")
    for r in rounds:
        print(f"  round {r['round']} {r['target']:<13} {r['iops']:>10,.0f} IOPS")
    if nvme["nvme_perf_rounds"]:
        lba = info.get("nvme0n1", {}).get("logical_block_size", "?")
        print(f"NVMe 4 KiB randread QD32 (LBA {lba} B): iblock {fmt(nvme['iblock_iops'])} IOPS, "
              f"raw namespace {fmt(nvme['nvme_raw_iops'])} IOPS (iblock/raw {nvme['iblock_vs_raw']})")
        for key in sorted(k for k in nvme if k.endswith("_ratio_vs_iblock")):
            t = key[: -len("_ratio_vs_iblock")]
            print(f"  {t} bdev {fmt(nvme[t + '_iops'])} IOPS, ratio vs iblock {nvme[key]} "
                  f"(median of rounds {nvme[t + '_round_ratios']})")
        for r in nvme["nvme_perf_rounds"]:
            print(f"  round {r['round']} {r['target']:<9} {r['iops']:>10,.0f} IOPS")
    for kind, c in suite.items():
        print(f"conformance {kind:<8} {c['passed']:>4} passed {c['failed']:>3} failed  "
              + " ".join(c["failed_tests"]))
    if scst["scst_perf_rounds"]:
        print(f"SCST 4 KiB randread QD32: dataplane/vdisk_fileio {scst['scst_ratio_vs_vdisk']}, "
              f"dataplane/fileio_tgt {scst['scst_ratio_vs_fileio_tgt']}, "
              f"null/vdisk_nullio {scst['scst_null_ratio_vs_nullio']}, "
              f"ioctls per I/O {scst['scst_ioctls_per_io']}")
        for r in scst["scst_perf_rounds"]:
            print(f"  round {r['round']} {r['target']:<9} {r['iops']:>10,.0f} IOPS")
    if scst["scst_qd1_p50_us"] is not None:
        print(f"SCST 4 KiB randread QD1 latency p50: batching (default) {scst['scst_qd1_p50_us']} us, "
              f"batching off {scst['scst_qd1_unbatched_p50_us']} us, ratio "
              f"{scst['scst_qd1_p50_ratio_vs_unbatched']} "
              f"(per round {scst['scst_qd1_p50_ratio_vs_unbatched_rounds']}; fio's bucket there "
              f"{scst['scst_qd1_p50_bucket_us']} us); mean latency ratio "
              f"{scst['scst_qd1_mean_ratio_vs_unbatched']} "
              f"(per round {scst['scst_qd1_mean_ratio_vs_unbatched_rounds']})")
    if scst["scst_restart_seconds"] is not None:
        print(f"SCST kill -9 restart: LUN served again after {scst['scst_restart_seconds']} s")
    if scst["scst_handoff_ms"] is not None:
        print(f"SCST hand-off: the old server handed its devices over in "
              f"{scst['scst_handoff_ms']:.0f} ms under fio (no I/O error)")
    if soak:
        print("soak: " + ", ".join(f"{k} {v}" for k, v in soak.items()))
    print(f"VM wall time {durations['vm_wall_s']} s (boot {boot_wall} s, "
          f"guest steps {durations['guest_tests_s']} s)")
    counts = {s: sum(1 for v in steps.values() if v == s) for s in ("pass", "fail", "skip")}
    print(f"vm: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    if problems:
        for p in problems:
            print(f"PROBLEM: {p}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
