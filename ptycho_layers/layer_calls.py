"""What both layers do around Keras's `Layer.__call__`: take the inputs the
functions take (nested Python lists), and run inside a `tf.data` pipeline
under any backend."""

import numbers

from keras import tree

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops

__all__ = ["call"]


def call(layer, keras_call, inputs, kwargs, single):
    """`keras_call(inputs, **kwargs)`, Keras's `Layer.__call__` bound to
    `layer`.

    Args:
        inputs: the layer's inputs: a tensor, or a tuple/list/dict of them.
            Nested Python lists of numbers become tensors first (Keras takes
            only tensors as positional inputs): the whole of `inputs` when
            `single` (a layer with one input), else each element.
        single: whether the layer takes one input (the held-image form).
    """
    inputs = _lists_as_tensors(inputs, single)
    with backends.graph_scope_for(inputs) as tensorflow_graph:
        if not tensorflow_graph:
            return keras_call(inputs, **kwargs)
        # TensorFlow tensors under JAX or PyTorch: Keras would convert them
        # to the backend's tensors, which a graph's symbolic tensors cannot
        # become, and refuses them as not the backend's (Keras's
        # preprocessing layers switch both off in `tf.data` too).
        saved = (layer._convert_input_args, layer._allow_non_tensor_positional_args)
        layer._convert_input_args = False
        layer._allow_non_tensor_positional_args = True
        if not layer.built:
            # Keras finds no input shapes in tensors not of its backend.
            layer.build(tree.map_structure(lambda x: tuple(x.shape), inputs))
        try:
            return keras_call(inputs, **kwargs)
        finally:
            (layer._convert_input_args,
             layer._allow_non_tensor_positional_args) = saved


def _numbers(value):
    """Whether `value` is a (nested) list or tuple of Python numbers."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    leaves = tree.flatten(value)
    return all(
        isinstance(x, numbers.Number) and not isinstance(x, bool) for x in leaves
    )


def _lists_as_tensors(inputs, single):
    if single:
        return ops.convert_to_tensor(inputs) if _numbers(inputs) else inputs
    if isinstance(inputs, dict):
        return {
            key: ops.convert_to_tensor(x) if _numbers(x) else x
            for key, x in inputs.items()
        }
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(
            ops.convert_to_tensor(x) if _numbers(x) else x for x in inputs
        )
    return inputs
