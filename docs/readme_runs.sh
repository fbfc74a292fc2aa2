#!/bin/bash
# The runs behind the README's figures, with today's code on the CPU (one thread each, so that two jobs
# share the 2-core machine they were run on). Their folders go to runs/ (not kept in git); assets/ keeps the
# pictures and numbers the README shows. Usage: bash docs/readme_runs.sh fashion | sample | models | categorical | fashion-models | paper-loss | baselines | codes | heads | photos
set -e
PY=${PY:-.venv/bin/python}
FM=/usr/share/datasets/fashion-mnist
case "$1" in
fashion)  # the defaults on Fashion-MNIST, 100 epochs (two threads: about an hour on 2 cores)
    $PY main.py --dataset fashion-mnist --directory $FM --epochs 100 --threads 2 --weights runs/fashion-100
    $PY main.py evaluate --weights runs/fashion-100 --threads 2 ;;
sample)   # the defaults on the embedded MNIST sample, 100 epochs
    $PY main.py --dataset mnist-sample --epochs 100 --threads 1 --weights runs/sample-100
    $PY main.py evaluate --weights runs/sample-100 --threads 1 ;;
models)   # each of the paper's other models, three seeds, 10 epochs on the MNIST sample
    for seed in 0 1 2; do
        common="--dataset mnist-sample --epochs 10 --threads 1 --seed $seed"
        $PY main.py $common --mode semi_supervised --labels 100 --weights runs/models/semi100-$seed
        $PY main.py $common --mode semi_supervised --labels 1000 --weights runs/models/semi1000-$seed
        $PY main.py $common --mode clustering --clusters 16 --weights runs/models/cluster16-$seed
        $PY main.py $common --mode supervised --latent_dim 2 --weights runs/models/supervised-$seed
        $PY main.py $common --mode dim_reduction --latent_dim 2 --labels 1000 --weights runs/models/dimred-$seed
        $PY main.py $common --label_discriminator --prior mixture --latent_dim 2 --weights runs/models/mixture-$seed
        $PY main.py $common --label_discriminator --prior swiss_roll --latent_dim 2 --weights runs/models/swiss-$seed
    done ;;
categorical)  # the categorical models of `models` alone (the rows whose defaults changed), then their baselines
    for seed in 0 1 2; do
        common="--dataset mnist-sample --epochs 10 --threads 1 --seed $seed"
        $PY main.py $common --mode semi_supervised --labels 100 --weights runs/models/semi100-$seed
        $PY main.py $common --mode semi_supervised --labels 1000 --weights runs/models/semi1000-$seed
        $PY main.py $common --mode clustering --clusters 16 --weights runs/models/cluster16-$seed
        $PY main.py $common --mode dim_reduction --latent_dim 2 --labels 1000 --weights runs/models/dimred-$seed
    done
    bash "$0" baselines ;;
fashion-models)  # two categorical models on Fashion-MNIST, one seed, 10 epochs, then evaluate (their baselines)
    common="--dataset fashion-mnist --directory $FM --epochs 10 --threads 1 --seed 0"
    $PY main.py $common --mode semi_supervised --labels 1000 --weights runs/fashion-models/semi1000-0
    $PY main.py $common --mode clustering --clusters 16 --weights runs/fashion-models/cluster16-0
    for run in semi1000-0 cluster16-0; do
        $PY main.py evaluate --weights runs/fashion-models/$run --out runs/fashion-models/$run/evaluate --threads 1
    done ;;
paper-loss)  # the categorical models with the paper's loss (none of our terms, phases or shifts), seed 0, 10 epochs
    paper="--balance_weight 0 --confidence_weight 0 --augment 0 --consistency_weight 0"
    common="--dataset mnist-sample --epochs 10 --threads 1 --seed 0 $paper"
    $PY main.py $common --mode clustering --clusters 16 --weights runs/paper-loss/cluster16-0
    $PY main.py $common --mode semi_supervised --labels 100 --weights runs/paper-loss/semi100-0 ;;
baselines)  # each categorical model's baseline beside its number: python main.py evaluate of each run above
    for run in cluster16 semi100 semi1000 dimred; do
        for seed in 0 1 2; do $PY main.py evaluate --weights runs/models/$run-$seed --out runs/models/$run-$seed/evaluate --threads 1; done
    done ;;
codes)    # clustering's other baseline: k-means on the codes of the plain AAE of `sample` (8-D, 100 epochs)
    for seed in 0 1 2; do
        $PY main.py evaluate --weights runs/models/cluster16-$seed --codes_of runs/sample-100 --out runs/codes-$seed
    done ;;
heads)    # the cluster heads of the README's first pictures: clustering, 100 epochs, seed 0
    $PY main.py --dataset mnist-sample --epochs 100 --threads 1 --mode clustering --clusters 16 --weights runs/heads-100 ;;
photos)   # a folder of real photographs no one here made: scikit-image's, cut into 32x32 patches (docs/data.md)
    $PY docs/photo_patches.py runs/photo_patches
    /usr/bin/time -f "%e s wall" $PY main.py --dataset folder --directory runs/photo_patches --epochs 100 --threads 1 \
        --weights runs/photos-100
    $PY main.py evaluate --weights runs/photos-100 --threads 1 ;;
*) echo "usage: bash docs/readme_runs.sh fashion | sample | models | categorical | fashion-models | paper-loss | baselines | codes | heads | photos" >&2; exit 2 ;;
esac
