#!/bin/bash
# Paper-scale runs on a GPU (how the n = 10,000 records and the MNIST MART weights
# under data/ were made). Nothing else in the project needs a GPU.
#
#   VQDBOOK_DATA=<mirror with mnist.npz, cifar10_test.npz> VQDBOOK_COMMIT=<sha> OUT=<folder> \
#       bash scripts/gpu_paper_scale.sh [tests] [mart] [tables] [strong]     (default: all four)
#
# Runs with whatever python3 holds torch there (the records name its versions), from the source
# tree (PYTHONPATH), so no install is needed. Each step has its own time limit so that one slow
# step cannot cost the others; whatever finished is packed into $OUT/results.tgz at the end.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/vqdbook-gpu}
mkdir -p "$OUT"
VQ="python3 -m vqdbook.cli"
step() { local limit=$1; shift; echo "=== $(date +%T) $*"; local t0=$SECONDS
         timeout "$limit" "$@"; echo "=== rc=$? in $((SECONDS - t0)) s"; }
pack() { tar czf "$OUT/results.tgz" data/results data/weights/*mart* 2>/dev/null; ls -la "$OUT"; }
trap pack EXIT

nvidia-smi -L
python3 -c "import torch, torchvision, sklearn; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'sklearn', sklearn.__version__, torch.cuda.get_device_name(0))"
parts=${*:-tests mart tables strong}
for part in $parts; do case $part in
tests)  # the device paths of the package: k-means, the three quantizers against the CPU, adversarial training
  step 60 python3 -m pytest -q -p no:cacheprovider tests/test_kmeans.py tests/test_quantizers.py tests/test_models.py -k "cuda or device_of_X" ;;
mart)   # the MNIST MART baseline of Table 1 (ε = 0.3, 5 PGD steps, β = 6; ε ramped in over 2 epochs)
  step 200 $VQ train --dataset mnist --arch mnist_cnn --method mart --variant mart --epochs ${MART_EPOCHS:-15} \
      --lr 0.01 --eps-ramp 2 --grad-clip 10 --device cuda \
      --notes "MART (Wang et al. 2020) on a GPU: fp32, one-cycle SGD peak LR 0.01, eps ramped over 2 epochs, grad-norm clip 10" ;;
tables) # Table 1: the MART row at the chapter's n = 1,000, then both tables on the full 10,000-image test sets
  step 45 $VQ run table1 --device cuda --batch-size 1000
  step 120 $VQ run table1 --full --device cuda --batch-size 2000
  step 130 $VQ run table2 --full --device cuda --batch-size 2000 ;;
strong) # the attack-strength check of chapter 3: a stronger PGD (100 steps, 3 restarts) on the same images
  step 60 $VQ run table2 --attack pgd-oblivious-strong --device cuda --batch-size 1000
  step 60 $VQ run table1 --attack pgd-oblivious-strong --device cuda --batch-size 1000
  step 240 $VQ run table1 --full --attack pgd-oblivious-strong --device cuda --batch-size 2000 ;;
*) echo "unknown part $part (parts: tests mart tables strong)"; exit 2 ;;
esac; done
