"""A stand-in training script: reads its hyperparameters and reports a metric."""

import json
import os


def main() -> None:
    epochs = int(os.environ.get("MLCYCLE_HP_EPOCHS", "1"))
    loss = 1.0
    for epoch in range(epochs):
        loss *= 0.5
        print(json.dumps({"epoch": epoch, "loss": loss}), flush=True)


if __name__ == "__main__":
    main()
