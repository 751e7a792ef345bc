#!/usr/bin/env bash
# The lever "LAQ supervised by the targets' labelled demos" through the benchmark, from /work (where runs/h3q is
# the `cpu` preset's seed-0 run of the in-domain and cross-task settings at K = 10, scratch and LAPA arms):
# its data and scratch cells are taken over, the LAQ is replaced by the supervised one, and the benchmark
# resumes from there (labels, pretraining, the LAPA cells: 17.5 min at 2 threads).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python "$here/laq_action_supervision.py" runs/h3q/pretrain/default/laq/final runs/h3q/data/video \
    runs/h3q/data/demos runs/sup/laq-final --weight 5 --steps 1500 --demos-per-task 10   # about 9 min
mkdir -p runs/sup/steps runs/sup/pretrain/default/laq runs/sup/cells/in-domain
cp runs/h3q/benchmark.json runs/sup/
cp -al runs/h3q/data runs/sup/data
cp -al runs/h3q/cells/in-domain/scratch runs/sup/cells/in-domain/scratch
cp runs/h3q/steps/data-*.done runs/h3q/steps/laq-train-default.done runs/h3q/steps/*scratch*.done runs/sup/steps/
cp runs/h3q/pretrain/default/laq/{config.json,summary.json,metrics.jsonl} runs/sup/pretrain/default/laq/
mv runs/sup/laq-final runs/sup/pretrain/default/laq/final
lapa benchmark --preset cpu --threads 2 --settings in-domain,cross-task --shots 10 --arms scratch,lapa --out runs/sup
