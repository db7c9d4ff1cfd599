#!/usr/bin/env bash
# The runs the screenshots show, into a fresh store in folder $1 (about 6 minutes on a laptop CPU):
#   docs/ui/scenario.sh /tmp/ui && python docs/ui/screenshots.py sqlite:////tmp/ui/mlflow.db docs/ui
set -euo pipefail
mkdir -p "$1" && cd "$1"
export MLFLOW_TRACKING_URI="sqlite:///$PWD/mlflow.db" MLFLOW_EXPERIMENT_NAME=facades
imgtrans pix2pix --max-steps 150 --no-progress --val-every 1 --sample-images 4
imgtrans pix2pix --max-steps 150 --gan-mode lsgan --no-progress --sample-images 4
imgtrans cyclegan --max-steps 60 --netG resnet_6blocks --ngf 16 --ndf 16 --no-progress --sample-images 4
for id in $(python -c "
import mlflow
for r in mlflow.search_runs(experiment_names=['facades'], output_format='list', filter_string=\"tags.model = 'pix2pix'\"): print(r.info.run_id)"); do
  imgtrans evaluate --run-id $id --grid-images 4 --no-progress
done
imgtrans compare --no-progress > /dev/null
cat > spec.yaml <<'YAML'
description: pix2pix on the built-in facades — learning rate and GAN objective
model: pix2pix
dataset: synthetic-facades
fixed: {ngf: 16, ndf: 16, sample_images: 4}
budget: {max_steps: 40}
full_budget: {max_steps: 120}
objectives: [{metric: val/psnr, direction: maximize}]
sampler: tpe
pruner: none
search_space:
  lr: {type: float, low: 1e-4, high: 1e-3, log: true}
  gan_mode: {type: categorical, choices: [vanilla, lsgan]}
YAML
imgtrans study --spec spec.yaml --n-trials 3 --retrain --register-as pix2pix --no-progress
imgtrans export --model-uri models:/pix2pix@champion --no-progress
first=$(python -c "
import mlflow
print(mlflow.search_runs(experiment_names=['facades'], output_format='list', filter_string=\"tags.model = 'pix2pix'\", order_by=['attributes.start_time ASC'])[0].info.run_id)")
imgtrans export --run-id $first --no-progress
