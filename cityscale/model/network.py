"""The network: an MLP from the encoded window to monotone quantiles for every horizon step."""

from __future__ import annotations

import torch
from torch import nn


class QuantileMLP(nn.Module):
    """Maps an encoded window to ``[batch, horizon, n_quantiles]`` in scaled units.

    The lowest quantile is predicted directly and every higher one adds a softplus step, so
    quantiles never cross (P10 <= P50 <= P90 by construction).
    """

    def __init__(self, in_dim: int, horizon: int, n_quantiles: int, hidden: int, dropout: float):
        super().__init__()
        self.horizon = horizon
        self.n_quantiles = n_quantiles
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, horizon * n_quantiles),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.body(x).view(-1, self.horizon, self.n_quantiles)
        base = raw[..., :1]
        steps = nn.functional.softplus(raw[..., 1:])
        return torch.cat([base, base + torch.cumsum(steps, dim=-1)], dim=-1)


def pinball_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, quantiles: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Weighted mean quantile loss over observed target hours.

    pred [B,H,Q]; target, mask [B,H]; weight [B] (e.g. each example's volume, so the loss on scaled
    values weighs busy sensors as WAPE does).
    """
    err = target.unsqueeze(-1) - pred
    loss = torch.maximum(quantiles * err, (quantiles - 1) * err)
    cell = (mask * weight[:, None]).unsqueeze(-1).expand_as(loss)
    return (loss * cell).sum() / cell.sum().clamp_min(1e-6)
