#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages, for the real-SLURM tests
# (tests/test_slurm.py). Needs root and apt. Idempotent: a second call rewrites the config, has
# the running daemons read it and cancels every job.
#
#   bash .ci/slurm.sh        # installs slurm-wlm and munge if absent, writes the config, starts
#   sinfo                    # one node, idle, in partition "ci"
#
# The configuration suits a container with no systemd and no cgroup delegation: process
# tracking by /proc (proctrack/linuxproc), no task plugin, no accounting, root as SlurmUser.
# The node offers every core and 90% of the memory, in one partition.
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: its key, and folders that belong to the munge user (munged refuses anything else)
mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
[[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged

host=$(hostname -s)
cpus=$(nproc)
memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
config=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >"$config" <<EOF
ClusterName=gavs-ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# a requeued job may start again this long after its credential was revoked (default 120 s)
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
KillWait=30
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# A cluster that is already running takes this config and drops every job; a fresh start clears
# the saved state (-c). Either way the tests begin on an empty node: a job recovered from a run
# that was cut short would otherwise hold the node allocated with no process behind it.
if scontrol ping >/dev/null 2>&1; then
    scontrol reconfigure
    scancel --full --quiet --user=root || true
else
    slurmctld -c
fi
pgrep -x slurmd >/dev/null || slurmd -c
for _ in $(seq 120); do
    if sinfo -h -o %T | grep -qx idle; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "slurm: the node did not become idle within 120 s; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
