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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlcycle.dataplane.server.signature import Signature, parse_signature
from mlcycle.dataplane.server.validation import (
    InputLayout,
    InputValidator,
    ModelInput,
    ParamsCheck,
    RequestError,
    TakesMissing,
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
        validator=InputValidator(
            signature, "dataframe", takes_missing=True, check_params=_params_check(model)
        ),
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
        row_independent=True,
        predict=getattr(model, predict_fn),
        signature=signature,
        validator=InputValidator(
            signature,
            layout,
            column_order,
            takes_missing=sklearn_takes_missing(model, signature),
            # scikit-learn's input checks refuse ±inf even where they allow NaN.
            takes_infinite=False,
        ),
        is_classifier=bool(is_classifier(model)) and predict_fn == "predict",
    )


def _params_check(model: Any) -> ParamsCheck | None:
    """Params checked as MLflow's pyfunc checks them in predict, before predict is called:
    a param of the wrong type or shape is then the caller's 400, not the model's 500."""
    from mlflow.exceptions import MlflowException
    from mlflow.types.schema import ParamSpec

    schema = model.metadata.get_params_schema()
    if schema is None:
        return None
    specs = {spec.name: spec for spec in schema.params}

    def check(params: Mapping[str, Any]) -> None:
        for name, value in params.items():
            spec = specs.get(name)
            if spec is None:
                continue  # MLflow ignores params its schema does not declare
            try:
                ParamSpec.validate_param_spec(value, spec)
            except MlflowException as error:
                raise RequestError(f"params.{name}", error.message) from None

    return check


def sklearn_takes_missing(model: Any, signature: Signature) -> TakesMissing:
    """Where a fitted scikit-learn model takes missing values, from its estimators' tags.

    A pipeline's own `allow_nan` tag is its first step's, which says nothing about a
    ColumnTransformer whose imputer takes NaN in one column while the regressor after it
    refuses NaN passed through in another; so each column is followed through the steps it
    goes to. A missing value is taken when every step on its way allows NaN, up to one that
    removes it (an imputer, a one-hot encoder that ignores unknown categories).
    """
    from sklearn.compose import ColumnTransformer

    steps = _sklearn_steps(model)
    if not steps or not isinstance(steps[0], ColumnTransformer) or not signature.columns:
        return _sklearn_path_takes_missing(steps, downstream=True)
    transformer = steps[0]
    after = _sklearn_path_takes_missing(steps[1:], downstream=True)
    fitted = [str(name) for name in getattr(transformer, "feature_names_in_", [])]
    taking = {spec.name for spec in signature.columns}
    for _, step, selection in transformer.transformers_:
        selected = _selected_columns(selection, fitted)
        if selected is None:  # a selection we cannot read: the whole model's tags decide
            return _sklearn_path_takes_missing(steps, downstream=True)
        if not (isinstance(step, str) and step == "drop") and not _sklearn_path_takes_missing(
            _sklearn_steps(step), after
        ):
            taking -= selected
    return frozenset(taking)


def _sklearn_steps(estimator: Any) -> list[Any]:
    """The estimators data goes through, nested pipelines flattened, "passthrough" left out."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return [inner for _, step in estimator.steps for inner in _sklearn_steps(step)]
    if estimator is None or (isinstance(estimator, str) and estimator == "passthrough"):
        return []
    return [estimator]


def _sklearn_path_takes_missing(steps: list[Any], downstream: bool) -> bool:
    for step in steps:
        effect = _sklearn_missing_effect(step)
        if effect != "passes":
            return effect == "removes"
    return downstream


def _sklearn_missing_effect(estimator: Any) -> str:
    """What one estimator does with a missing value: "refuses", "removes" or "passes"."""
    from sklearn.preprocessing import OneHotEncoder

    try:
        from sklearn.utils import get_tags

        allows = bool(get_tags(estimator).input_tags.allow_nan)
    except ImportError:  # scikit-learn before 1.6
        allows = bool(estimator._get_tags().get("allow_nan", False))
    except (AttributeError, TypeError):  # not a scikit-learn estimator
        allows = False
    if not allows:
        return "refuses"
    if type(estimator).__module__.startswith("sklearn.impute"):
        return "removes"
    if isinstance(estimator, OneHotEncoder):
        # Missing is a category when one was seen in fit; otherwise an unknown category,
        # encoded as zeros unless unknown categories must raise.
        seen = any(pd.isna(categories).any() for categories in estimator.categories_)
        return "removes" if seen or estimator.handle_unknown != "error" else "refuses"
    return "passes"


def _selected_columns(selection: Any, fitted: list[str]) -> set[str] | None:
    """The column names a ColumnTransformer entry selects; None when they cannot be told."""
    if isinstance(selection, str):
        return {selection}
    if isinstance(selection, int) and not isinstance(selection, bool):
        return {fitted[selection]} if 0 <= selection < len(fitted) else None
    items = list(selection) if isinstance(selection, list | tuple | np.ndarray) else None
    if items is None:
        return None
    if all(isinstance(item, str) for item in items):
        return {str(item) for item in items}
    if all(isinstance(item, bool | np.bool_) for item in items) and len(items) == len(fitted):
        return {name for name, chosen in zip(fitted, items, strict=True) if chosen}
    if all(isinstance(item, int | np.integer) for item in items):
        indices = [int(item) for item in items]
        if all(-len(fitted) <= index < len(fitted) for index in indices):
            return {fitted[index] for index in indices}
    return None


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
        row_independent=True,
        predict=predict,
        signature=signature,
        validator=InputValidator(signature, "ndarray", takes_missing=True),
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
        row_independent=True,
        predict=model.predict,
        signature=signature,
        validator=InputValidator(signature, "ndarray", takes_missing=True),
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
        validator=InputValidator(signature, "ndarray", takes_missing=True),
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
        row_independent=True,
        predict=predict,
        signature=signature,
        validator=InputValidator(signature, "ndarray", takes_missing=True),
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
