#!/bin/bash
# Compares variants of the VM test's measurements in alternating boots: the
# guest's speed drifts from hour to hour and boot to boot (by 2x on some
# hosts), so two variants are only comparable measured close together and
# in both orders.
#
#   tests/vm/ab.sh [--rounds N] [--steps PRESET|STEP,...] [--keys KEY,...] VARIANT...
#
# VARIANT is "NAME" or "NAME VAR=value [VAR=value...]": the variables go to
# run.sh for that variant's boots (one argument, quoted; split on spaces, so
# a value cannot hold one), e.g.
#
#   tests/vm/ab.sh 'old VM_DATAPLANE=/tmp/dp-old' 'new VM_DATAPLANE=/tmp/dp-new'
#   tests/vm/ab.sh --steps conformance base 'off VM_KERNEL_ARGS=mitigations=off'
#
# Each round boots every variant once, in the given order in odd rounds and
# reversed in even ones (A B, B A, A B, ...), so a drift over the run weighs
# on each variant alike. PRESET names the steps (default perf):
#   perf         the TCMU perf step (RAM LUN against rd_mcp, QD 32 and QD 1)
#   scst         the SCST leg's perf step
#   conformance  the libiscsi runs on all five LUNs
# or give the steps themselves, comma-separated, with --keys.
#
# Results: $AB_DIR (default target/vm-ab) holds each boot's results
# (ROUND-NAME/) and ab.tsv, one line per boot: round, variant, run.sh's exit
# status, the VM's wall time and each KEY of its result.json (a step's
# seconds for a key "step:NAME"); the medians per variant follow. Nothing is
# built: VM_DATAPLANE (default target/release/dataplane) must exist. Run
# nothing else meanwhile, no build above all: it would be measured too.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
AB_DIR=${AB_DIR:-$REPO/target/vm-ab}

die() {
    echo "ab.sh: $*" >&2
    exit 2
}

rounds=2
steps=perf
keys=
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
        --steps) steps=${2:?--steps needs a preset or steps}; shift 2 ;;
        --keys) keys=${2:?--keys needs keys}; shift 2 ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        --*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
case $rounds in '' | *[!0-9]* | 0) die "--rounds must be a whole number above 0" ;; esac
[ $# -ge 1 ] || die "no variant given (see --help)"

case $steps in
    perf)
        steps=modules,nvme_devices,rd_mcp_create,serve_start,lio_create,perf
        : "${keys:=tcmu_default_ratio_vs_rd_mcp,tcmu_qd1_ratio_vs_rd_mcp,rd_mcp_iops,rd_mcp_qd1_iops,tcmu_doorbells_per_io}"
        ;;
    scst)
        steps=modules,scst_modules,scst_serve_start,scst_add_lun,scst_perf
        : "${keys:=scst_ratio_vs_vdisk,scst_ratio_vs_fileio_tgt,scst_null_ratio_vs_nullio,scst_ioctls_per_io,scst_qd1_p50_ratio_vs_unbatched}"
        ;;
    conformance)
        steps=modules,nvme_devices,rd_mcp_create,iblock_create,serve_start,lio_create,lio_create_file
        steps+=,lio_create_nvme,lio_create_nvmestripe,iscsi_target
        for k in rd ram striped file nvme; do steps+=,conformance_$k; done
        # The runs go at once and each step waits for its own: their sum
        # is the time of the slowest.
        : "${keys:=step:conformance_rd,step:conformance_ram,step:conformance_striped,step:conformance_file,step:conformance_nvme}"
        ;;
    *)
        [ -n "$keys" ] || die "--steps with steps of your own needs --keys"
        ;;
esac

names=()
for v in "$@"; do
    name=${v%% *}
    case $name in '' | *[!A-Za-z0-9_.-]*) die "variant name '$name': letters, digits, . _ - only" ;; esac
    for n in "${names[@]}"; do [ "$n" != "$name" ] || die "variant $name given twice"; done
    names+=("$name")
done

mkdir -p "$AB_DIR"
table=$AB_DIR/ab.tsv
printf 'round\tvariant\tstatus\tvm_wall_s\t%s\n' "${keys//,/$'\t'}" >"$table"

# figures DIR: the boot's wall time and KEYS from its result.json.
figures() {
    python3 - "$1/result.json" "$keys" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    r = {}
steps = r.get("durations", {}).get("steps_s", {})
out = [r.get("durations", {}).get("vm_wall_s")]
for k in sys.argv[2].split(","):
    out.append(steps.get(k[5:]) if k.startswith("step:") else r.get(k))
print("\t".join("-" if v is None else str(v) for v in out))
EOF
}

for round in $(seq 1 "$rounds"); do
    order=("$@")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = $# ; i >= 1; i--)); do order+=("${!i}"); done
    fi
    for v in "${order[@]}"; do
        name=${v%% *}
        vars=()
        [ "$v" = "$name" ] || read -r -a vars <<<"${v#* }"
        out=$AB_DIR/$round-$name
        rm -rf "$out"
        echo "ab.sh: round $round of $rounds, $name${vars[*]:+ (${vars[*]})}" >&2
        status=0
        env "${vars[@]}" VM_NO_BUILD=1 VM_RESULTS="$out" VM_STEPS="$steps" \
            "$HERE/run.sh" >"$out.log" 2>&1 || status=$?
        printf '%s\t%s\t%s\t%s\n' "$round" "$name" "$status" "$(figures "$out")" | tee -a "$table"
    done
done

# The medians per variant, over the boots that passed.
python3 - "$table" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
head, rows = rows[0], rows[1:]
print("\nmedian over passing boots\t" + "\t".join(head[3:]))
for name in dict.fromkeys(r[1] for r in rows):
    mine = [r for r in rows if r[1] == name and r[2] == "0"]
    cells = []
    for i in range(3, len(head)):
        vals = [float(r[i]) for r in mine if r[i] != "-"]
        cells.append(f"{statistics.median(vals):.4g}" if vals else "-")
    print(f"{name} ({len(mine)} boots)\t" + "\t".join(cells))
EOF
