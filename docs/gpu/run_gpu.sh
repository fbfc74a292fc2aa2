#!/bin/bash
# One prepared GPU session: CUDA tests, README training runs, the benchmark. Every part has its own
# timeout and the results are re-packed after each, so a slow part loses nothing that came before.
export PYTHONUNBUFFERED=1
R=/tmp/results; mkdir -p $R
exec > >(tee $R/gpu_log.txt) 2>&1
pack() { tar czf $OUT/results.tgz -C /tmp --exclude='*.pt' results; }
FM=.gpu_data/fashion-mnist
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
date
echo "== part 1: CUDA tests (every model: CUDA-graph replays against eager steps)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_priors.py tests/test_perf.py tests/test_variants.py -k "cuda or graph" 2>&1 | tail -8
pack
echo "== part 2: default 100 epochs, Fashion-MNIST"; date
timeout 270 python3 main.py --dataset fashion-mnist --directory $FM --epochs 100 --weights $R/fm100 --device cuda
timeout 60 python3 main.py evaluate --weights $R/fm100 --device cuda
pack
echo "== part 3: benchmark"; date
timeout 170 python3 bench.py --device cuda --profile --json $R/bench_gpu.json
pack
echo "== part 4: default 100 epochs, embedded MNIST sample"; date
timeout 60 python3 main.py --dataset mnist-sample --epochs 100 --weights $R/ms100 --device cuda
timeout 40 python3 main.py evaluate --weights $R/ms100 --device cuda
pack
echo "== part 5: the fast configuration (bench.FAST), Fashion-MNIST"; date
timeout 60 python3 main.py --dataset fashion-mnist --directory $FM --precision bf16 --lr_decay cosine --epochs 38 --weights $R/fast --device cuda
timeout 60 python3 main.py evaluate --weights $R/fast --device cuda
pack
date; echo "== done"
