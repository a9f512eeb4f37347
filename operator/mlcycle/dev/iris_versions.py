"""Three versions of one registered iris model, for rollouts on the local stack: versions
1 and 2 are good logistic regressions, version 3 answers like an iris classifier but fails
on long petals (about half of the iris rows), as a model with a broken feature pipeline
would. The tests and the rollout benchmark roll between them. Two more misbehave without
failing: one answers slowly, one expects an input schema the clients do not send."""

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

SLOW_MODEL_CODE = """
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Slow(PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(SECONDS)
        return [0] * len(model_input)


mlflow.models.set_model(Slow())
"""

CONSTANT_MODEL_CODE = """
import mlflow
from mlflow.pyfunc import PythonModel


class Constant(PythonModel):
    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


mlflow.models.set_model(Constant())
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


def register_misbehaving_versions(
    tracking_uri: str, name: str, workdir: Path, *, slow_seconds: float = 0.3
) -> tuple[str, str]:
    """Registers two more versions of `name`: one that answers every request after
    `slow_seconds` (a latency regression), one whose signature wants a fifth feature, so
    the model server refuses the clients' 4-feature rows with a 400 (a broken input
    schema). Returns their version numbers (slow, strict)."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    features, _labels = load_iris(return_X_y=True, as_frame=True)
    answers = pd.Series([0] * len(features))
    versions: list[str] = []
    for code_text, inputs in (
        (SLOW_MODEL_CODE.replace("SECONDS", repr(slow_seconds)), features),
        (CONSTANT_MODEL_CODE, features.assign(**{"stem length (cm)": 1.0})),
    ):
        code = workdir / f"model_{len(versions)}.py"
        code.write_text(code_text)
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                signature=infer_signature(inputs, answers),
                registered_model_name=name,
            )
        versions.append(str(info.registered_model_version))
    return versions[0], versions[1]
