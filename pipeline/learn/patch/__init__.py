"""Patch models (``kind: torch_patch``): spatio-temporal networks trained on patches of the cube
and applied to overlapping patches blended into a seamless map.

``blend`` (numpy only) places the patches on a lattice and blends them; ``models`` holds the
networks, ``train`` the training loop, ``learner`` the registry's learner. Importing this package
does not import torch.
"""
