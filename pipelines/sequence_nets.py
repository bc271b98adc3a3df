"""PyTorch direction networks over windows of feature rows (imported only where torch is wanted).

Module-level classes so the MLflow pytorch flavour can pickle them and load them back by name.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

N_CLASSES = 3


class DirectionNet(nn.Module):
    """Standardises inside the graph (so the ONNX export carries it), encodes the window with an LSTM or a
    Transformer encoder, and classifies from the last step."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, kind: str, n_features: int, window: int, hidden: int, layers: int, heads: int,
                 dropout: float, mean: npt.NDArray[np.float64], scale: npt.NDArray[np.float64]) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.encoder: nn.Module
        self.project: nn.Module
        if kind == "lstm":
            self.project = nn.Identity()
            self.encoder = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True,
                                   dropout=dropout if layers > 1 else 0.0)
            self.position = nn.Parameter(torch.zeros(1, 1, 1), requires_grad=False)
        else:
            self.project = nn.Linear(n_features, hidden)
            layer = nn.TransformerEncoderLayer(hidden, heads, hidden * 2, dropout=dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.position = nn.Parameter(torch.zeros(1, window, hidden))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, N_CLASSES)

    def logits(self, windows: torch.Tensor) -> torch.Tensor:
        x = (windows - self.mean) / self.scale
        if self.kind == "lstm":
            encoded, _ = self.encoder(x)
        else:
            encoded = self.encoder(self.project(x) + self.position)
        out: torch.Tensor = self.head(self.dropout(encoded[:, -1, :]))
        return out

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(windows), dim=-1)
