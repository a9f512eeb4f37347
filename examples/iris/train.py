"""Train a scikit-learn classifier on iris and log it to the MLflow run mlcycle created.

mlcycle sets MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME and MLFLOW_RUN_ID before this starts,
so `mlflow.start_run()` continues that run instead of opening a new one, and the
hyperparameters arrive as MLCYCLE_HP_<NAME>.
"""

from __future__ import annotations

import os

import mlflow
import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split


def main() -> None:
    max_iter = int(os.environ.get("MLCYCLE_HP_MAX_ITER", "200"))
    regularization = float(os.environ.get("MLCYCLE_HP_C", "1.0"))
    features, labels = load_iris(return_X_y=True, as_frame=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.3, random_state=7, stratify=labels
    )
    model = LogisticRegression(max_iter=max_iter, C=regularization)
    model.fit(train_x, train_y)
    predictions = model.predict(test_x)

    with mlflow.start_run():
        mlflow.log_metric("accuracy", float(accuracy_score(test_y, predictions)))
        mlflow.log_metric("f1_macro", float(f1_score(test_y, predictions, average="macro")))
        mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=test_x.head(3),
        )
    print(f"accuracy={accuracy_score(test_y, predictions):.3f}", flush=True)


if __name__ == "__main__":
    main()
