#!/bin/bash
# One prepared GPU session (see the GPU section of docs/performance.md): the CUDA tests, then the rows of
# docs/experiments.md's baseline table that one H200 has not yet measured with today's defaults, three seeds,
# each run evaluated beside its baseline (`main.py evaluate`). The results are packed into $OUT every minute,
# so a run cut short loses nothing finished.
#
# Sized by the session of 2026-12-04 (docs/gpu/h200-2026-12-04.md): 36 runs at once did not finish in 470 s,
# 12 at once finished 100 epochs on the MNIST sample in 2 to 3 minutes. So: Fashion-MNIST's four rows at
# 10 epochs (12 runs) beside the sample's two unmeasured rows at 100 epochs (6 runs).
#
#   bash docs/gpu/run_gpu.sh          # on the GPU machine, from the repository root; Fashion-MNIST's four
#                                     # .gz files in .gpu_data/fashion-mnist/ (carried: not in git)
#   DEVICE=cpu PARALLEL=3 SEEDS=0 FASHION_EPOCHS=0 SAMPLE_EPOCHS=1 bash docs/gpu/run_gpu.sh    # a dry run of the plumbing here
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda} PARALLEL=${PARALLEL:-12} SEEDS=${SEEDS:-0 1 2} FASHION_EPOCHS=${FASHION_EPOCHS:-10} SAMPLE_EPOCHS=${SAMPLE_EPOCHS:-100} OUT=${OUT:-/tmp/out}
mkdir -p $OUT
R=${R:-/tmp/results}; mkdir -p $R
exec > >(tee $R/gpu_log.txt) 2>&1
FM=.gpu_data/fashion-mnist
pack() {  # logs and numbers only: a checkpoint's temporary file (.aae.pt.N.tmp) took the first try past 16 MiB
    (cd /tmp && find results -type f \( -name '*.log' -o -name '*.json' -o -name '*.csv' -o -name '*.txt' \) |
        tar czf $OUT/results.tgz -T -)
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
date

echo "== part 1, in the background: CUDA tests (every model: CUDA-graph replays against eager steps)"
(timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_variants.py -k "cuda" > $R/cuda_tests.txt 2>&1;
 echo "exit $?" >> $R/cuda_tests.txt) &
tests=$!

echo "== part 2: the categorical models, three seeds each"
# name: the flags of one setting; today's defaults are docs/experiments.md's "imsat"
declare -A SETTING=(
    [defaults]=""
)
declare -A ROW=(
    [cluster16]="--mode clustering --clusters 16"
    [cluster30]="--mode clustering --clusters 30"
    [semi100]="--mode semi_supervised --labels 100"
    [semi1000]="--mode semi_supervised --labels 1000"
)
add() {  # DATA EPOCHS ROW SETTING: one line a seed, into the data set's queue
    local data=$1 epochs=$2 row=$3 setting=$4 where=""
    [ "$data" = fashion-mnist ] && where="--directory $FM"
    for seed in $SEEDS; do
        echo "$data-$row-$setting-$seed --dataset $data $where --epochs $epochs --seed $seed ${ROW[$row]} ${SETTING[$setting]}" |
            tr -s ' ' | sed 's/ $//' >> $R/jobs-$data.txt  # no trailing blank: xargs -L would join the next line on
    done
}
: > $R/jobs-fashion-mnist.txt; : > $R/jobs-mnist-sample.txt
for row in cluster30 semi1000; do add mnist-sample $SAMPLE_EPOCHS $row defaults; done
if [ $FASHION_EPOCHS -gt 0 ]; then
    for row in cluster16 cluster30 semi100 semi1000; do add fashion-mnist $FASHION_EPOCHS $row defaults; done
fi
wc -l $R/jobs-*.txt
one() {  # NAME FLAGS...: train, then evaluate beside the baseline
    local name=$1; shift
    python3 main.py train --device $DEVICE --threads 1 --weights $R/$name "$@" > $R/$name.log 2>&1 &&
        python3 main.py evaluate --device $DEVICE --threads 1 --weights $R/$name --out $R/$name/evaluate >> $R/$name.log 2>&1
    echo "$(date +%T) $name: exit $?"
}
export -f one; export R DEVICE
(while sleep 60; do pack; done) &
packer=$!
# two queues side by side, so that the long Fashion-MNIST runs do not hold back the sample's
timeout 470 xargs -P $PARALLEL -L 1 bash -c 'one "$@"' _ < $R/jobs-fashion-mnist.txt &
fashion=$!
timeout 470 xargs -P 6 -L 1 bash -c 'one "$@"' _ < $R/jobs-mnist-sample.txt
wait $fashion
wait $tests
kill $packer
date
for data in fashion-mnist mnist-sample; do
    mkdir -p /tmp/grid-$data
    for d in $R/$data-*; do [ -d $d ] && ln -sfn $d /tmp/grid-$data/$(basename $d | sed "s/^$data-//"); done
    echo "== $data"; python3 docs/summarise_grid.py /tmp/grid-$data
done
cat $R/cuda_tests.txt
pack
date; echo "== done"
