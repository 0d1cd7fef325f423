#!/bin/bash
# Side by side on a many-core machine: this crate's criterion binaries against the PyTorch
# baseline at the same thread count (16, then 2 on cores 0 and 1), and the thread efficiency
# bench at 16 and 1 threads. Prepare, in the repository (the folder is ignored by git):
#
#   mkdir -p .perf/bin .perf/oracle
#   cargo bench --features parallel --no-run 2>&1 | grep Executable   # the binaries' paths
#   cp target/release/deps/{rate,crate_layer,threads}-<hash> .perf/bin/ (named rate, crate_layer, threads)
#   strip .perf/bin/*
#   cp PATH/oracle/{oracle.py,bench_torch.py} .perf/oracle/
#
# then run on the many-core machine `bash benches/manycore_run.sh > perf.log` and turn the log
# into tables with `python3 benches/manycore_table.py perf.log`. About 4 minutes on 16 cores.
cd "$(dirname "$0")/../.perf" || exit 1
torch_rows() { python3 oracle/bench_torch.py --threads "$1" --reps 5 --out /tmp/t.md "${@:2}" 2>&1 | grep -v "^wrote"; }
echo "== machine"; nproc; lscpu | grep -E "Model name|Core\(s\)|Socket"
python3 -c "import torch; print('torch', torch.__version__)"
echo "== 16 threads"
RAYON_NUM_THREADS=16 ./bin/crate_layer --bench --noplot 'crate_(block|model)' 2>&1 | grep -E "^crate|time:"
torch_rows 16 --only crate --select forward
RAYON_NUM_THREADS=16 ./bin/rate --bench --noplot grad 2>&1 | grep -E "^delta|time:"
torch_rows 16 --only mcr2 --select 'value\+grad'
echo "== 2 threads"
RAYON_NUM_THREADS=2 taskset -c 0,1 ./bin/crate_layer --bench --noplot 'crate_(block|model)_f../forward/' 2>&1 | grep -E "^crate|time:"
taskset -c 0,1 python3 oracle/bench_torch.py --only crate --select 'forward$' --threads 2 --reps 5 --out /tmp/t.md 2>&1 | grep -v "^wrote"
for t in 16 1; do
  echo "== threads bench $t"
  RAYON_NUM_THREADS=$t ./bin/threads --bench --noplot 2>&1 | grep -E "^threads|time:"
done
echo "== done"
