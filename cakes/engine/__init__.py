"""The training engine: the loop, lr schedule, checkpoints, exact resume, preemption, distributed training,
mixed precision, the run log, TensorBoard, meters, the progress bar and main.py's network flags."""
