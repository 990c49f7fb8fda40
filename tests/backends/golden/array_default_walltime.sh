#!/bin/bash
#SBATCH --job-name=gb-array-10-1
#SBATCH --array=0-1
#SBATCH --chdir=/scratch/gb
#SBATCH --output=/scratch/gb/.slurm/%x-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --export=NONE
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
# gearbroker: 2 task(s) of image localhost/gearbroker/busybox:1
set -u
case "${SLURM_ARRAY_TASK_ID:-}" in
0)
    exec >>/scratch/gb/jobs/job-10/logs/output.log 2>&1
    cd -- /scratch/gb/jobs/job-10 || exit 1
    # gb-job-10-1
    gb_run=(fakeruntime run --name=gb-job-10-1 --mount=/scratch/gb/jobs/job-10/v0:/flywheel/v0 localhost/gearbroker/busybox:1 sh -c 'echo gear 0')
    gb_stop=()
    gb_remove=()
    ;;
1)
    exec >>/scratch/gb/jobs/job-11/logs/output.log 2>&1
    cd -- /scratch/gb/jobs/job-11 || exit 1
    # gb-job-11-1
    gb_run=(fakeruntime run --name=gb-job-11-1 --mount=/scratch/gb/jobs/job-11/v0:/flywheel/v0 localhost/gearbroker/busybox:1 sh -c 'echo gear 1')
    gb_stop=()
    gb_remove=()
    ;;
*)
    echo "gearbroker: no array task ${SLURM_ARRAY_TASK_ID:-}" >&2
    exit 64
    ;;
esac
if ((${#gb_stop[@]})); then
    trap '"${gb_stop[@]}" >/dev/null 2>&1' TERM INT
    "${gb_run[@]}" &
    gb_pid=$!
    wait "$gb_pid"
    gb_code=$?
    while kill -0 "$gb_pid" 2>/dev/null; do
        wait "$gb_pid"
        gb_code=$?
    done
else
    "${gb_run[@]}"
    gb_code=$?
fi
if ((${#gb_remove[@]})); then
    "${gb_remove[@]}" >/dev/null 2>&1
fi
exit "$gb_code"
