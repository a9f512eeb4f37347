"""The model server's native flavors with real models: each is saved by MLflow as a user
would log it, loaded from its directory, fed the rows a request becomes, and must answer
what the library itself predicts, faster than through pyfunc's DataFrame."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlcycle.dataplane.server.flavors import PYFUNC, load_model_dir

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True, as_frame=True)
    return features, labels


def _xgboost(features: Any, labels: Any, path: Path, signature: Any) -> Any:
    import mlflow.xgboost
    import xgboost

    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(features, labels)
    mlflow.xgboost.save_model(model, str(path), signature=signature)
    return model


def _lightgbm(features: Any, labels: Any, path: Path, signature: Any) -> Any:
    import lightgbm
    import mlflow.lightgbm

    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(features, labels)
    mlflow.lightgbm.save_model(model, str(path), signature=signature)
    return model


def _onnx(features: Any, labels: Any, path: Path, signature: Any) -> Any:
    import mlflow.onnx
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(features.to_numpy(np.float32), labels)
    onnx_model = to_onnx(model, features.to_numpy(np.float32)[:1], options={"zipmap": False})
    mlflow.onnx.save_model(onnx_model, str(path), signature=signature)
    return model


@pytest.mark.parametrize(
    ("flavor", "save", "dtype", "classifier", "pyfunc_too"),
    [
        ("xgboost", _xgboost, np.float64, True, True),
        ("lightgbm", _lightgbm, np.float64, True, True),
        # Classes come from the output's integer dtype. MLflow's own onnx pyfunc cannot
        # serve this model at all (its label and probability outputs differ in shape).
        ("onnx", _onnx, np.float32, None, False),
    ],
)
def test_native_flavor_answers_as_the_library_does(
    iris: tuple[Any, Any],
    tmp_path: Path,
    flavor: str,
    save: Callable[..., Any],
    dtype: type,
    classifier: bool | None,
    pyfunc_too: bool,
) -> None:
    from mlflow.models import infer_signature

    features, labels = iris
    typed = features.astype(dtype)
    signature = infer_signature(typed, labels)
    model = save(features, labels, tmp_path / flavor, signature)

    loaded = load_model_dir(tmp_path / flavor)
    assert loaded.flavor == flavor
    assert loaded.is_classifier is classifier
    rows = typed.to_numpy().tolist()[::10]
    model_input = loaded.validator.rows(rows, list(features.columns), "dataframe_split.data")
    assert isinstance(model_input, np.ndarray)  # the fast path: no DataFrame per request
    predicted = np.asarray(loaded.predict(model_input)).ravel()
    np.testing.assert_array_equal(predicted, model.predict(typed.to_numpy()[::10]).ravel())

    if not pyfunc_too:
        return
    # The general fallback serves the same model with the same answers.
    fallback = load_model_dir(tmp_path / flavor, force_pyfunc=True)
    assert fallback.flavor == PYFUNC
    frame = fallback.validator.rows(rows, list(features.columns), "dataframe_split.data")
    np.testing.assert_array_equal(np.asarray(fallback.predict(frame)).ravel(), predicted)
