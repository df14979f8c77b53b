"""Training AlexNet: the recipe (config), its resolution against the machine and the data
(setup), the steps and evaluation (engine), the run (trainer), checkpoints, the run
directory, metrics, plots, TensorBoard, and torchrun's replicas (distributed).
"""
