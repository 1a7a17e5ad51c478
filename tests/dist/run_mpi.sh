#!/usr/bin/env bash
# Runs a program on N ranks of OpenMPI on this machine (loopback): run_mpi.sh N PROGRAM ARGS...
# As root OpenMPI wants to be told; on 2 cores, 4 ranks need --oversubscribe.
set -uo pipefail
n=$1
shift
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Shared memory between ranks; no network interfaces are probed.
exec mpirun --bind-to none -np "$n" --mca btl self,vader "$@"
