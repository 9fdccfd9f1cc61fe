"""The forecasting model: input encoding, the network, and its Lightning training wrapper.

``inputs`` and ``network`` need only numpy and torch, ``boosted`` adds lightgbm, so serving can load a model without the
training stack.
"""
