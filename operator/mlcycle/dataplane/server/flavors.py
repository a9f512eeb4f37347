"""Loading a model directory: its native flavor when there is one, pyfunc otherwise.

MLflow's pyfunc wrapper turns every request into a pandas DataFrame and re-checks the
schema; for a scikit-learn iris model that alone costs several times the predict call.
The native flavors take arrays, so the server validates against the signature once and
calls the framework's own predict. pyfunc stays the fallback for every other model (and
for models whose native load fails), and can be forced.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlcycle.dataplane.server.signature import (
    InputLayout,
    InputValidator,
    ModelInput,
    Signature,
    parse_signature,
)

logger = logging.getLogger(__name__)

PYFUNC = "python_function"


@dataclass(frozen=True)
class LoadedModel:
    flavor: str
    predict: Callable[..., Any]
    """Called with one ModelInput (and params= for pyfunc models that declare params)."""
    signature: Signature
    validator: InputValidator
    is_classifier: bool | None = None
    """None: decided from the output dtype (integers, strings and booleans are classes)."""
    accepts_params: bool = False
    row_independent: bool = False
    """Each output row depends on its input row alone, so concurrent requests may share one
    predict call (micro-batching). Known for the native flavors; a pyfunc model may compute
    across its whole input, so it is called one request at a time unless the user declares it."""
    metadata: dict[str, Any] = field(default_factory=dict)


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((model_dir / "MLmodel").read_text())
    return document


def load_model_dir(model_dir: Path, force_pyfunc: bool = False) -> LoadedModel:
    mlmodel = read_mlmodel(model_dir)
    flavors: dict[str, Any] = mlmodel.get("flavors", {})
    signature = parse_signature(mlmodel.get("signature"))
    if not force_pyfunc:
        for flavor, loader in _NATIVE_LOADERS.items():
            if flavor not in flavors or importlib.util.find_spec(_LIBRARIES[flavor]) is None:
                continue
            try:
                return loader(model_dir, flavors, signature)
            except Exception:
                logger.warning(
                    "native %s load failed, falling back to pyfunc", flavor, exc_info=True
                )
            break
    return _load_pyfunc(model_dir, signature)


def _load_pyfunc(model_dir: Path, signature: Signature) -> LoadedModel:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(model_dir))
    return LoadedModel(
        flavor=PYFUNC,
        predict=model.predict,
        signature=signature,
        validator=InputValidator(signature, "dataframe"),
        accepts_params=signature.has_params,
    )


def _pyfunc_predict_fn(flavors: dict[str, Any]) -> str:
    return str(flavors.get(PYFUNC, {}).get("predict_fn", "predict"))


def _load_sklearn(model_dir: Path, flavors: dict[str, Any], signature: Signature) -> LoadedModel:
    import mlflow.sklearn
    from sklearn.base import is_classifier

    model = mlflow.sklearn.load_model(str(model_dir))
    column_order: list[str] | None = None
    fitted_names = getattr(model, "feature_names_in_", None)
    layout: InputLayout = "ndarray"
    if fitted_names is not None:
        fitted = [str(name) for name in fitted_names]
        if {spec.name for spec in signature.columns} == set(fitted):
            # Columns are checked by name against the signature and laid out in the order
            # the model was fitted in, which is the check sklearn's warning stands for.
            column_order = fitted
            warnings.filterwarnings(
                "ignore", message="X does not have valid feature names", category=UserWarning
            )
        else:
            layout = "dataframe"  # let sklearn match the names itself
    predict_fn = _pyfunc_predict_fn(flavors)
    return LoadedModel(
        flavor="sklearn",
        predict=getattr(model, predict_fn),
        signature=signature,
        validator=InputValidator(signature, layout, column_order),
        is_classifier=bool(is_classifier(model)) and predict_fn == "predict",
    )


def _load_xgboost(model_dir: Path, flavors: dict[str, Any], signature: Signature) -> LoadedModel:
    import mlflow.xgboost
    import xgboost

    model = mlflow.xgboost.load_model(str(model_dir))
    if isinstance(model, xgboost.Booster):
        booster = model

        def predict(batch: ModelInput) -> Any:
            return booster.predict(xgboost.DMatrix(batch))

        is_classifier = None
    else:
        predict = model.predict
        is_classifier = isinstance(model, xgboost.XGBClassifier)
    return LoadedModel(
        flavor="xgboost",
        predict=predict,
        signature=signature,
        validator=InputValidator(signature, "ndarray"),
        is_classifier=is_classifier,
    )


def _load_lightgbm(model_dir: Path, flavors: dict[str, Any], signature: Signature) -> LoadedModel:
    import lightgbm
    import mlflow.lightgbm

    model = mlflow.lightgbm.load_model(str(model_dir))
    # Fitted on a DataFrame, called with arrays in the signature's column order.
    warnings.filterwarnings(
        "ignore", message="X does not have valid feature names", category=UserWarning
    )
    return LoadedModel(
        flavor="lightgbm",
        predict=model.predict,
        signature=signature,
        validator=InputValidator(signature, "ndarray"),
        is_classifier=isinstance(model, lightgbm.LGBMClassifier) or None,
    )


def _load_pytorch(model_dir: Path, flavors: dict[str, Any], signature: Signature) -> LoadedModel:
    import mlflow.pytorch
    import torch

    module = mlflow.pytorch.load_model(str(model_dir))
    module.eval()

    def predict(batch: ModelInput) -> Any:
        if not isinstance(batch, np.ndarray):
            raise TypeError("the native pytorch path takes a single tensor input")
        with torch.no_grad():
            return module(torch.from_numpy(batch)).cpu().numpy()

    return LoadedModel(
        flavor="pytorch",
        predict=predict,
        signature=signature,
        validator=InputValidator(signature, "ndarray"),
    )


def _load_onnx(model_dir: Path, flavors: dict[str, Any], signature: Signature) -> LoadedModel:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(model_dir / flavors["onnx"]["data"]), providers=["CPUExecutionProvider"]
    )
    input_names = [node.name for node in session.get_inputs()]

    def predict(batch: ModelInput) -> Any:
        feeds = batch if isinstance(batch, dict) else {input_names[0]: batch}
        return session.run(None, feeds)[0]

    return LoadedModel(
        flavor="onnx",
        predict=predict,
        signature=signature,
        validator=InputValidator(signature, "ndarray"),
    )


_Loader = Callable[[Path, dict[str, Any], Signature], LoadedModel]
# Tried in this order; the first flavor present whose library is importable wins.
_NATIVE_LOADERS: dict[str, _Loader] = {
    "sklearn": _load_sklearn,
    "xgboost": _load_xgboost,
    "lightgbm": _load_lightgbm,
    "pytorch": _load_pytorch,
    "onnx": _load_onnx,
}
_LIBRARIES = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "pytorch": "torch",
    "onnx": "onnxruntime",
}
