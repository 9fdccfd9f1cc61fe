"""The forecasting model: input encoding, its two members (the MLP and LightGBM boosters), and the
Lightning training wrapper.

``inputs``, ``network`` and ``boosted`` need only numpy, torch and lightgbm, so serving can load a
model without the training stack.
"""
