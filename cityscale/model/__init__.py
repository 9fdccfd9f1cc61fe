"""The forecasting model: input encoding, the network, and its Lightning training wrapper.

``inputs`` and ``network`` need only numpy and torch, so serving can load a model without the
training stack.
"""
