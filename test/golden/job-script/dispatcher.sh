#!/bin/bash
# Job array b1 of tes-gateway: element i runs the job script of the i-th task.
dirs=(
  '/w/task one'
  '/w/it'\''s'
)
dir=${dirs[${SLURM_ARRAY_TASK_ID:?not run as an array element}]}
cd -- "$dir" || exit 120
exec bash ./job.sh > slurm.out 2> slurm.err
