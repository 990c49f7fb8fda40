#!/bin/bash
#SBATCH --job-name=gb-job-10-1
#SBATCH --chdir=/scratch/gb/jobs/job-10
#SBATCH --output=/scratch/gb/jobs/job-10/logs/output.log
#SBATCH --open-mode=append
#SBATCH --export=NONE
#SBATCH --partition=gpu,gpu-long
#SBATCH --account=neuro-lab
#SBATCH --qos=normal
#SBATCH --constraint=avx2
#SBATCH --exclusive
#SBATCH --cpus-per-task=3
#SBATCH --mem=4096M
#SBATCH --gres=gpu:a100:2
#SBATCH --time=1-01:01:01
# gearbroker: 1 task(s) of image localhost/gearbroker/busybox:1
set -u
# gb-job-10-1
gb_run=(fakeruntime run --name=gb-job-10-1 --mount=/scratch/gb/jobs/job-10/v0:/flywheel/v0 localhost/gearbroker/busybox:1 sh -c 'echo gear 0')
gb_stop=()
gb_remove=()
module load apptainer/1.2
export APPTAINER_CACHEDIR=/scratch/gb/.cache
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
