"""``lstm``: an LSTM classifier that reads an image row by row (Hochreiter & Schmidhuber 1997).

Each of the H rows is one time step of C*W features; the last hidden state feeds a linear
classifier. The sequence length is fixed by the image height, so the model exports with a fixed
sequence length and a dynamic batch.
"""

from __future__ import annotations

from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


class RowLSTM(nn.Module):
    def __init__(self, input_shape, num_classes: int, hidden: int, layers: int):
        super().__init__()
        c, h, w = input_shape
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes,
                       "hidden": hidden, "layers": layers}
        self.rows, self.features = h, c * w
        self.lstm = nn.LSTM(self.features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        seq = x.permute(0, 2, 1, 3).reshape(x.shape[0], self.rows, self.features)
        out, _ = self.lstm(seq)
        return self.head(out[:, -1])


@register_model(defaults=TrainDefaults(epochs=3, small_data_epochs=40, batch_size=64, lr=2e-3))
def lstm(*, input_shape, num_classes, hidden=128, layers=2) -> nn.Module:
    """LSTM reading the image row by row; last hidden state to a linear classifier."""
    return RowLSTM(input_shape, num_classes, hidden, layers)
