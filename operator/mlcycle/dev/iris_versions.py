"""Three versions of one registered iris model, for rollouts on the local stack: versions
1 and 2 are good logistic regressions, version 3 answers like an iris classifier but fails
on long petals (about half of the iris rows), as a model with a broken feature pipeline
would. The tests and the rollout benchmark roll between them."""

from __future__ import annotations

from pathlib import Path

BAD_MODEL_CODE = """
import mlflow
from mlflow.pyfunc import PythonModel


class Bad(PythonModel):
    def predict(self, context, model_input, params=None):
        if (model_input["petal length (cm)"] > 4.0).any():
            raise ValueError("feature pipeline broke on long petals")
        return [0] * len(model_input)


mlflow.models.set_model(Bad())
"""


def register_iris_versions(tracking_uri: str, name: str, workdir: Path) -> list[list[float]]:
    """Registers versions 1 (good), 2 (good) and 3 (bad) of `name`; returns the iris rows."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    features, labels = load_iris(return_X_y=True, as_frame=True)
    signature = infer_signature(features, labels)
    for regularisation in (1.0, 0.5):
        model = LogisticRegression(C=regularisation, max_iter=500).fit(features, labels)
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                model, name="model", signature=signature, registered_model_name=name
            )
    code = workdir / "bad_model.py"
    code.write_text(BAD_MODEL_CODE)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            signature=infer_signature(features, pd.Series([0] * len(features))),
            registered_model_name=name,
        )
    rows: list[list[float]] = features.to_numpy().tolist()
    return rows
