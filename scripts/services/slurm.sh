#!/usr/bin/env bash
# Single-node Slurm cluster on localhost (Debian slurm-wlm 22.05 + munge), without systemd.
#
# Usage: scripts/services/slurm.sh start|stop|restart|status
#
# start    installs munge, slurmctld, slurmd and slurm-client if missing, creates the munge key,
#          starts munged (user munge), writes /etc/slurm/slurm.conf, starts slurmctld and
#          slurmd (as root; they daemonize), waits for the node `localhost` to be idle, runs a
#          smoke `sbatch --wrap 'echo hi'` until COMPLETED, and writes
#          $GB_SERVICES_DIR/slurm.env. When the daemons already run with a different
#          slurm.conf (e.g. another GB_SLURM_MINJOBAGE), they are restarted.
# stop     cancels every job, stops slurmd, slurmctld and munged, removes their pid files.
# restart  stop, then start.
# status   prints the node state and exits 0 when the node answers, 3 when not.
#
# Environment: GB_SLURM_MINJOBAGE (default 300) is how many seconds `squeue -t all` still
# reports a finished job; GB_SLURM_CPUS (default 8) is the CPU count advertised for the node.
# Partitions: `debug` (default, no time limit) and `short` (MaxTime 10 minutes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/services/lib_extra.sh
source "$here/lib_extra.sh"

CONF=/etc/slurm/slurm.conf
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
MUNGE_KEY=/etc/munge/munge.key
LOG_DIR=/var/log/slurm
MIN_JOB_AGE="${GB_SLURM_MINJOBAGE:-300}"
NODE_CPUS="${GB_SLURM_CPUS:-8}"
NODE=localhost

render_conf() {
    cat <<EOF
# Written by scripts/services/slurm.sh: single-node test cluster.
ClusterName=gearbroker
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=$NODE Default=NO MaxTime=10 State=UP
EOF
}

daemons_alive() {
    pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID"
}

node_ready() {
    [[ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1)" =~ ^(idle|mixed|allocated) ]]
}

start_munge() {
    if [[ ! -s "$MUNGE_KEY" ]]; then
        gb_log "creating $MUNGE_KEY"
        install -d -o munge -g munge -m 700 /etc/munge
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
    if ! pid_alive "$MUNGE_PID"; then
        rm -f "$MUNGE_PID" /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
        (cd / && runuser -u munge -- /usr/sbin/munged)
    fi
    wait_for -t 15 munge_works || gb_die "munged does not answer (log: /var/log/munge/munged.log)"
}

munge_works() {
    munge -n | unmunge
}

start_slurm_daemons() {
    install -d -o slurm -g slurm -m 755 /var/spool/slurmctld
    install -d -m 755 /var/spool/slurmd "$LOG_DIR"
    chown slurm:slurm "$LOG_DIR"
    rm -f "$CTLD_PID" "$SLURMD_PID"
    /usr/sbin/slurmctld
    /usr/sbin/slurmd -N "$NODE"
    wait_for -t 60 node_ready || {
        tail -n 10 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2
        gb_die "node $NODE did not become idle"
    }
}

stop_slurm_daemons() {
    local ids
    if pid_alive "$CTLD_PID"; then
        ids="$(squeue -h -o %A 2>/dev/null || true)"
        # shellcheck disable=SC2086 # one argument per job id
        [[ -z "$ids" ]] || scancel $ids 2>/dev/null || true
    fi
    kill_pidfile "$SLURMD_PID" 20
    kill_pidfile "$CTLD_PID" 20
}

# job_state ID: the state `squeue --json` reports for job ID (22.05 ignores -j with --json).
job_state() {
    squeue --json -t all | python3 -c 'import json, sys
for job in json.load(sys.stdin)["jobs"]:
    if str(job["job_id"]) == sys.argv[1]:
        state = job["job_state"]
        print(state if isinstance(state, str) else ",".join(state))' "$1"
}

job_finished() {
    [[ "$(job_state "$1")" =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL) ]]
}

smoke_job() {
    local out="$GB_SERVICES_DIR/slurm-smoke.out" id state
    rm -f "$out"
    id="$(sbatch --parsable -o "$out" --wrap 'echo hi')"
    wait_for -t 30 job_finished "$id" || gb_die "smoke job $id did not finish"
    state="$(job_state "$id")"
    [[ "$state" == COMPLETED && "$(cat "$out")" == hi ]] ||
        gb_die "smoke job $id ended $state with output '$(cat "$out" 2>/dev/null)'"
    rm -f "$out"
}

cmd_start() {
    local conf_changed=0
    apt_install munge slurmctld slurmd slurm-client
    mkdir -p "$GB_SERVICES_DIR" /etc/slurm
    if ! render_conf | cmp -s - "$CONF"; then
        render_conf >"$CONF"
        conf_changed=1
    fi
    start_munge
    if daemons_alive && ((conf_changed == 0)) && node_ready; then
        gb_log "slurmctld and slurmd already running"
    else
        daemons_alive && gb_log "slurm.conf changed: restarting the daemons"
        stop_slurm_daemons
        start_slurm_daemons
    fi
    smoke_job
    write_env slurm GEARBROKER_TEST_SLURM=1 "GEARBROKER_TEST_SLURM_MINJOBAGE=$MIN_JOB_AGE"
    gb_log "Slurm node $NODE idle (MinJobAge=$MIN_JOB_AGE); source $GB_SERVICES_DIR/slurm.env"
}

cmd_stop() {
    stop_slurm_daemons
    kill_pidfile "$MUNGE_PID" 10
    remove_env slurm
    gb_log "Slurm and munge stopped"
}

cmd_status() {
    if daemons_alive && node_ready; then
        echo "running: node $NODE $(sinfo -h -n "$NODE" -o %T | head -n 1), MinJobAge" \
            "$(sed -n 's/^MinJobAge=//p' "$CONF")"
    else
        echo "not running"
        return 3
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|restart|status" >&2
        exit 2
        ;;
esac
