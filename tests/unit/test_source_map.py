"""convertkit/checker/source_map.py: from node metadata back to the source model."""

from __future__ import annotations

from onnx import helper

from convertkit.checker.source_map import locate

STACK = (
    'File "/home/me/project/model.py", line 28, in forward\n'
    "    return self.head(self.body(x))\n"
    'File "/venv/lib/python3.11/site-packages/transformers/models/bert/modeling_bert.py", '
    "line 291, in forward\n    hidden = self.dense(hidden)\n"
    'File "/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 134, in '
    "forward\n    return F.linear(input, self.weight, self.bias)\n"
)


def _node(name: str = "node_MatMul_7", **metadata: str):
    node = helper.make_node("MatMul", ["a", "b"], ["c"], name=name)
    for key, value in metadata.items():
        prop = node.metadata_props.add()
        prop.key, prop.value = key.replace("__", "."), value
    return node


def test_dynamo_metadata_gives_the_module_and_the_innermost_model_frame():
    node = _node(**{
        "pkg__torch__onnx__name_scopes":
            "['', 'encoder', 'encoder.layer.3', 'encoder.layer.3.attention', 'linear']",
        "pkg__torch__onnx__class_hierarchy":
            "['m.Bert', 'm.Encoder', 'm.Layer', 'torch.nn.modules.linear.Linear', "
            "'aten.linear.default']",
        "pkg__torch__onnx__stack_trace": STACK,
    })

    location = locate(node)

    assert location is not None
    assert location.layer == "encoder.layer.3.attention"
    assert location.module_class == "torch.nn.modules.linear.Linear"
    assert location.line == 291  # the innermost frame outside torch itself
    assert location.file.endswith("modeling_bert.py")
    assert location.describe() == ("layer `encoder.layer.3.attention` "
                                   "(transformers/models/bert/modeling_bert.py:291)")


def test_the_namespace_string_is_read_when_name_scopes_are_missing():
    node = _node(namespace=": m.Net/body: torch.nn.Sequential/body.3: torch.nn.MaxPool2d/"
                           "max_pool2d: aten.max_pool2d.default")

    location = locate(node)

    assert location is not None and location.layer == "body.3"
    assert location.describe() == "layer `body.3`"


def test_torchscript_style_node_names_give_the_module_path():
    location = locate(_node("/encoder/layer.0/attention/self/query/MatMul"))

    assert location is not None
    assert location.layer == "encoder.layer.0.attention.self.query"
    assert location.origin == "node name"


def test_a_plain_node_maps_to_nothing():
    assert locate(_node("conv_7")) is None


def test_a_root_level_op_has_a_frame_but_no_layer():
    node = _node(**{"pkg__torch__onnx__name_scopes": "['', 'add']",
                    "pkg__torch__onnx__stack_trace": STACK.split("\n")[0]})

    location = locate(node)

    assert location is not None and location.layer is None
    assert location.describe().startswith("source ") and location.describe().endswith(":28")
