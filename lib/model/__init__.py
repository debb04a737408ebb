"""Model floor: networks, losses and a model's forward pass, built from a recipe by name.

backbones (timm models, local weights, GeM), smallnet (airnet_* for 28-32 px images), losses (by
name), optim (parameter groups, layer-wise lr decay, torch.compile), tta (test-time ops by name),
forward (probabilities of a model over a loader, averaged over TTA ops), factory (a recipe's model,
a trained run's model). Beside lib.data; neither imports the other.
"""
