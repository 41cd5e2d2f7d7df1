"""FILE.py:NAME and module:NAME sources: a keras.Model, a tf.Module or a tf.function, or a
callable (a factory or a model class) that returns one when called with no arguments."""

from __future__ import annotations

from convertkit.adapters import LowerRequest
from convertkit.adapters.python_source import load_python_object
from convertkit.adapters.tensorflow.keras import is_keras_model, keras_model, load_keras_weights
from convertkit.adapters.tensorflow.reasons import error_reason
from convertkit.adapters.tensorflow.savedmodel import from_trackable, function_model
from convertkit.adapters.tensorflow.tracing import TfModel
from convertkit.errors import UsageError
from convertkit.spec import SourceRef


def load_python(source: SourceRef, request: LowerRequest, tf) -> TfModel:
    obj = load_python_object(source)
    if callable(obj) and not _is_tf_object(obj, tf):  # a factory, or a model class
        obj = _build(obj, source)
    if is_keras_model(obj):
        model = keras_model(obj, source.text, tf)
        if request.options.signature is not None:
            raise UsageError(f"--signature does not apply to a Keras model ({source.text})",
                             hint="drop --signature: a Keras model has one call",
                             code="option-not-applicable")
        if request.options.weights is not None:
            load_keras_weights(obj, request.options.weights)
            model.notes.append(f"weights loaded from {request.options.weights.name}")
        return model
    if request.options.weights is not None:
        raise UsageError(
            f"--weights applies to Keras models only; {source.text} is a "
            f"{type(obj).__name__}", hint="drop --weights", code="weights-not-applicable")
    is_function = isinstance(obj, tf.types.experimental.GenericFunction)
    is_concrete = isinstance(obj, tf.types.experimental.ConcreteFunction)
    if (is_function or is_concrete) and request.options.signature is not None:
        raise UsageError(f"--signature does not apply to a tf.function ({source.text})",
                         hint="drop --signature", code="option-not-applicable")
    if is_function:
        return function_model(obj, source.text, tf)
    if is_concrete:
        return function_model(obj, source.text, tf, concrete=obj)
    if isinstance(obj, tf.__internal__.tracking.AutoTrackable):
        return from_trackable(obj, request.options.signature, source.text, tf)
    raise UsageError(
        f"{source.text} is a {type(obj).__name__}, not a keras.Model, tf.Module or tf.function",
        hint="name a keras.Model, a tf.Module, a tf.function, or a function returning one",
        code="not-a-model")


def _is_tf_object(obj, tf) -> bool:
    return is_keras_model(obj) or isinstance(obj, (
        tf.types.experimental.GenericFunction, tf.types.experimental.ConcreteFunction,
        tf.__internal__.tracking.AutoTrackable))


def _build(factory, source: SourceRef):
    try:
        return factory()
    except Exception as exc:
        raise UsageError(
            f"{source.text}() raised {type(exc).__name__}: {error_reason(exc)}",
            hint="the factory must build the model with no arguments",
            code="factory-failed") from exc
