"""The training engine that main.py drives: a run (network placed on the devices, trained or evaluated), its
loaders and checkpoints (exact resume), --prune, the loop, lr schedule, preemption, distributed training, mixed
precision, the run log, TensorBoard, meters and multi-view scoring."""
