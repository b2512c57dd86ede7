#!/bin/sh
# Run the seven scenarios behind bench/README.md's "Latest figures", back to back, the way
# their figures were taken: grpc-floor, sweep, peers, batch (100 and 1,000 lines), kernels and
# recovery pinned to core 1, durability. About 20 minutes on a 2-core VM; run nothing else.
#
#   sh bench/tools/run_all.sh OUTDIR [SCENARIO ...]     # default: all seven; a fresh OUTDIR
#
# Each scenario writes OUTDIR/NAME.json, OUTDIR/NAME.png (where it plots) and its printed
# output to OUTDIR/NAME.out; OUTDIR/log has the start and end of each. Then
#   grep -hE 'MET|MISSED' OUTDIR/*.out
# lists every target line. Run from the repository root with its venv's python on PATH or as
# PYTHON=.venv/bin/python (default python3).
set -u

OUT=${1:?usage: run_all.sh OUTDIR [SCENARIO ...]}
shift
SCENARIOS=${*:-grpc-floor sweep peers batch kernels recovery durability}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
status=0
for name in $SCENARIOS; do
    echo "$(date -u +%H:%M:%S) start $name" >> "$OUT/log"
    case $name in
        kernels | recovery) set -- taskset -c 1 "$PY" -m bench "$name" --json "$OUT/$name.json" ;;
        batch) set -- "$PY" -m bench batch --sizes 100,1000 --json "$OUT/batch.json" --plot "$OUT/batch.png" ;;
        *) set -- "$PY" -m bench "$name" --json "$OUT/$name.json" --plot "$OUT/$name.png" ;;
    esac
    "$@" > "$OUT/$name.out" 2>&1
    rc=$?
    [ $rc -eq 0 ] || status=$rc
    echo "$(date -u +%H:%M:%S) end $name rc=$rc" >> "$OUT/log"
done
exit $status
