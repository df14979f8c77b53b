"""Training AlexNet: the recipe (config), its resolution against the machine and the data
(setup), the steps and evaluation (engine), the run's loop (trainer), what it prints
(console), its checkpoints (checkpointing; the format: checkpoint), the run directory,
metrics, plots, TensorBoard, and torchrun's replicas (distributed).
"""
