"""The Open Inference Protocol (KServe V2, spoken by Triton, MLServer and Seldon) over REST.

Requests and answers of ``/v2/...`` routes, without the HTTP layer (that is in ``_app.py``).
A model is one input tensor, ``input`` of shape ``[-1, n_features]`` with the datatype of the
model's signature, and one output tensor, ``predictions``; a model whose signature names its
columns also takes one ``[-1]`` tensor per column, named by it. JSON tensor data and the binary
tensor data extension (what ``tritonclient`` sends by default) are both read and written.

numpy is imported when a request is answered, never when this module is imported.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mlshift.errors import ConfigError, InvalidPayload
from mlshift.serving._loaders import LoadedModel
from mlshift.serving._payload import Batch, dumps, loads
from mlshift.specs.model import ModelRef, Signature

__all__ = ["INPUT", "OUTPUT", "InferRequest", "V2Error", "V2Model", "encode_infer", "parse_infer"]

#: The name of the model's one input tensor, and of its output tensor.
INPUT = "input"
OUTPUT = "predictions"
#: The header that splits a body into its JSON part and binary tensor data.
HEADER_LENGTH = "inference-header-content-length"

_DATATYPE_OF: dict[str, str] = {
    "float64": "FP64",
    "float32": "FP32",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
    "string": "BYTES",
}
# Datatype → numpy dtype name ("object" for BYTES).
_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
# The numpy kinds JSON data of each datatype may parse into.
_KINDS: dict[str, str] = {"BOOL": "b", "BYTES": "U"}
for _name in _NUMPY:
    if _name.startswith(("INT", "UINT")):
        _KINDS[_name] = "iu"
    elif _name.startswith("FP"):
        _KINDS[_name] = "iuf"


class V2Error(Exception):
    """A request the protocol answers with an error: ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def of(cls, exc: InvalidPayload) -> V2Error:
        """A 400 with the message (and hint) of an invalid payload."""
        return cls(400, exc.message + (f" (hint: {exc.hint})" if exc.hint else ""))

    @property
    def body(self) -> bytes:
        """The protocol's error body."""
        return dumps({"error": self.message})


@dataclass(frozen=True)
class V2Model:
    """How a served model appears to the protocol.

    Attributes:
        name: The model's name: from its registered ref, else the artifact's file name.
        version: The registered version, when known.
        platform: The framework (``sklearn``, ``onnx``, ``predictor``).
        datatype: The datatype of the ``input`` tensor.
        output_datatype: The datatype of the ``predictions`` tensor, as far as it is known
            before predicting (answers carry the datatype of what the model returned).
        width: The number of features, or ``-1`` when unknown.
        columns: The signature's column names and datatypes, when it names them.
    """

    name: str
    version: str | None
    platform: str
    datatype: str
    width: int
    output_datatype: str = "FP64"
    columns: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, model: LoadedModel, model_ref: str | None) -> V2Model:
        """Describe ``model``, served as ``model_ref`` (``name:version``) when given."""
        name, version = model.path.name.split(".", 1)[0] or "model", None
        if model_ref:
            try:
                ref = ModelRef.parse(model_ref)
                name, version = ref.name, ref.version
            except ConfigError:
                name = model_ref
        signature = model.signature
        columns: tuple[tuple[str, str], ...] = ()
        if signature is not None and signature.column_names is not None:
            columns = tuple((c.name or "", _DATATYPE_OF[c.dtype]) for c in signature.inputs)
        return cls(
            name=name,
            version=version,
            platform=model.framework,
            datatype=_input_datatype(model),
            width=signature.n_features if signature is not None else -1,
            output_datatype=_output_datatype(model),
            columns=columns,
        )

    def check(self, path_params: Mapping[str, Any]) -> None:
        """Refuse a route that names another model or version.

        Raises:
            V2Error: 404, naming the model (and version) served here.
        """
        name = path_params.get("model_name")
        version = path_params.get("model_version")
        served = f"{self.name!r}" + (f" version {self.version}" if self.version else "")
        if name != self.name:
            raise V2Error(404, f"model {name!r} is not served here; this server serves {served}")
        if version is not None and version != self.version:
            raise V2Error(404, f"model {name!r} has no version {version!r} here; this server serves {served}")

    def metadata(self) -> dict[str, Any]:
        """The protocol's model metadata response."""
        return {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": self.platform,
            "inputs": [{"name": INPUT, "datatype": self.datatype, "shape": [-1, self.width]}],
            "outputs": [{"name": OUTPUT, "datatype": self.output_datatype, "shape": [-1]}],
        }


def _output_datatype(model: LoadedModel) -> str:
    signature = model.signature
    if signature is not None and len(signature.outputs) == 1:
        return _DATATYPE_OF[signature.outputs[0].dtype]
    native = model.native
    if model.framework == "onnx":
        # onnxruntime names an output's type "tensor(int64)", "tensor(float)", ...
        kind = str(native.get_outputs()[0].type).removeprefix("tensor(").removesuffix(")")
        onnx_types = {
            "int64": "INT64",
            "int32": "INT32",
            "float": "FP32",
            "double": "FP64",
            "string": "BYTES",
        }
        return onnx_types.get(kind, "FP64")
    classes = getattr(native, "classes_", None)  # a scikit-learn classifier
    kind = getattr(getattr(classes, "dtype", None), "kind", "f")
    return {"i": "INT64", "u": "INT64", "b": "BOOL", "U": "BYTES", "O": "BYTES"}.get(kind, "FP64")


def _input_datatype(model: LoadedModel) -> str:
    if model.array_dtype is not None:
        return _DATATYPE_OF.get(str(model.array_dtype), "FP64")
    signature = model.signature
    if signature is None:
        return "FP64"
    kinds = {c.dtype for c in signature.inputs}
    if "string" in kinds:
        return "BYTES"
    return _DATATYPE_OF[kinds.pop()] if len(kinds) == 1 else "FP64"


@dataclass(frozen=True)
class InferRequest:
    """What an inference request asked for besides its rows.

    Attributes:
        id: The request's ``id``, echoed in the response.
        binary_output: Whether the output tensor goes back as binary tensor data.
    """

    id: str | None
    binary_output: bool


def parse_infer(
    body: bytes | bytearray, header_length: str | None, spec: V2Model, model: LoadedModel
) -> tuple[Batch, InferRequest]:
    """Read an inference request into a batch of rows for ``model``.

    Raises:
        V2Error: 400, naming the input, shape, datatype or value that does not fit.
    """
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise V2Error(
                400,
                f"Inference-Header-Content-Length is {header_length!r}, expected the size of the "
                f"JSON part of the {len(body)}-byte body",
            )
        split = int(header_length)
        body, binary = body[:split], bytes(body[split:])
    try:
        doc = loads(body)
    except ValueError as exc:
        raise V2Error(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise V2Error(400, 'the request body must be a JSON object with "inputs"')
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise V2Error(400, f'"inputs" must be a non-empty list of tensors; {_expected(spec)}')
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error(400, '"parameters" must be an object')
    request = InferRequest(
        id=str(doc["id"]) if doc.get("id") is not None else None,
        binary_output=_binary_output(doc, parameters),
    )
    tensors = _Tensors(inputs, binary)
    names = [t.get("name") for t in inputs]
    if names == [INPUT]:
        batch = _one_tensor(tensors, spec, model)
    elif spec.columns and sorted(map(str, names)) == sorted(c for c, _ in spec.columns):
        batch = _column_tensors(tensors, spec)
    else:
        unknown = [n for n in names if n != INPUT and n not in dict(spec.columns)]
        what = f"unknown input {unknown[0]!r}" if unknown else f"inputs {names!r} do not fit the model"
        raise V2Error(400, f"{what}; {_expected(spec)}")
    params = {k: v for k, v in parameters.items() if k not in _PROTOCOL_PARAMETERS}
    if params:
        batch = replace(batch, params=params, params_key="parameters")
    return batch, request


# Request parameters the protocol (and tritonclient) use for itself, not for the model.
_PROTOCOL_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
)


def _binary_output(doc: Mapping[str, Any], parameters: Mapping[str, Any]) -> bool:
    outputs = doc.get("outputs")
    if outputs is None:
        return bool(parameters.get("binary_data_output", False))
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise V2Error(400, f'"outputs" must be a list of {{"name": ...}} objects; the model has {OUTPUT!r}')
    binary = bool(parameters.get("binary_data_output", False))
    for output in outputs:
        if output.get("name") != OUTPUT:
            raise V2Error(400, f"unknown output {output.get('name')!r}; the model has one output, {OUTPUT!r}")
        output_parameters = output.get("parameters") or {}
        if isinstance(output_parameters, dict) and "binary_data" in output_parameters:
            binary = bool(output_parameters["binary_data"])
    return binary


def _expected(spec: V2Model) -> str:
    shape = [-1, spec.width]
    text = f"the model takes one input {INPUT!r} (datatype {spec.datatype}, shape {shape})"
    if spec.columns:
        text += ", or one [-1] tensor per column: " + ", ".join(f"{c} ({d})" for c, d in spec.columns)
    return text


class _Tensors:
    """The request's input tensors, each read once, JSON or binary data."""

    def __init__(self, inputs: list[dict[str, Any]], binary: bytes) -> None:
        self.inputs = {str(t.get("name")): t for t in inputs}
        self.binary = binary
        self.offset = 0
        self.offsets: dict[str, int] = {}
        for tensor in inputs:  # binary data comes in the order of the inputs
            parameters = tensor.get("parameters")
            size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
            if size is not None:
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise V2Error(400, f"input {tensor.get('name')!r}: binary_data_size must be a byte count")
                self.offsets[str(tensor.get("name"))] = self.offset
                self.offset += size
        if self.offset != len(binary):
            raise V2Error(
                400,
                f"the inputs' binary_data_size add up to {self.offset} bytes, "
                f"but {len(binary)} bytes of binary data follow the JSON",
            )

    def read(self, name: str, datatype: str, count: int) -> Any:
        """The tensor's values as a flat numpy array (JSON data as parsed by numpy)."""
        import numpy as np

        tensor = self.inputs[name]
        if name in self.offsets:
            start = self.offsets[name]
            size = tensor["parameters"]["binary_data_size"]
            chunk = self.binary[start : start + size]
            if datatype == "BYTES":
                values = _unpack_bytes(chunk, name)
                arr = np.asarray(values, dtype=object)
            else:
                dtype = np.dtype(_NUMPY[datatype]).newbyteorder("<")
                if size != count * dtype.itemsize:
                    raise V2Error(
                        400,
                        f"input {name!r} has {size} bytes of {datatype} data, "
                        f"its shape needs {count * dtype.itemsize}",
                    )
                arr = np.frombuffer(chunk, dtype=dtype)
        else:
            if "data" not in tensor:
                raise V2Error(400, f'input {name!r} has no "data" (and no binary_data_size)')
            data = tensor["data"] if isinstance(tensor["data"], list) else [tensor["data"]]
            if datatype == "BYTES":
                # Values as sent: a table with string and number columns is checked per column.
                arr = np.asarray(data, dtype=object)
            else:
                try:
                    arr = np.asarray(data)
                except (ValueError, TypeError):
                    raise V2Error(
                        400, f"input {name!r}: data is ragged; send a flat list in row-major order"
                    ) from None
                kinds = _KINDS[datatype]
                if arr.size and arr.dtype.kind not in kinds:
                    raise V2Error(
                        400,
                        f"input {name!r}: data holds {_kind_name(arr.dtype.kind)}, "
                        f"expected {_kind_name(kinds[-1])} ({datatype})",
                    )
            arr = arr.reshape(-1)
        if arr.size != count:
            raise V2Error(400, f"input {name!r} has {arr.size} values, its shape needs {count}")
        return arr


def _kind_name(kind: str) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "strings"}.get(
        kind, "objects"
    )


def _unpack_bytes(chunk: bytes, name: str) -> list[str]:
    values: list[str] = []
    pos = 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise V2Error(400, f"input {name!r}: BYTES data ends inside a length prefix")
        (n,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + n > len(chunk):
            raise V2Error(400, f"input {name!r}: BYTES data ends inside an element")
        try:
            values.append(chunk[pos : pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise V2Error(400, f"input {name!r}: a BYTES element is not UTF-8 text") from None
        pos += n
    return values


def _tensor_header(tensor: Mapping[str, Any]) -> tuple[str, list[int]]:
    name = tensor.get("name")
    datatype = tensor.get("datatype")
    shape = tensor.get("shape")
    if datatype not in _NUMPY:
        raise V2Error(400, f"input {name!r}: datatype {datatype!r} is not one of {', '.join(_NUMPY)}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise V2Error(400, f"input {name!r}: shape {shape!r} must be a list of sizes (whole numbers, no -1)")
    return str(datatype), shape


def _fits(given: str, wanted: str) -> bool:
    """Whether ``given`` data is taken by a model input of datatype ``wanted``."""
    if given == wanted or wanted == "BYTES":
        return True
    if given == "BYTES":
        return False
    import numpy as np

    return bool(np.can_cast(np.dtype(_NUMPY[given]), np.dtype(_NUMPY[wanted]), "safe"))


def _one_tensor(tensors: _Tensors, spec: V2Model, model: LoadedModel) -> Batch:
    tensor = tensors.inputs[INPUT]
    datatype, shape = _tensor_header(tensor)
    if not _fits(datatype, spec.datatype):
        raise V2Error(400, f"input {INPUT!r} has datatype {datatype}, {_expected(spec)}")
    width = spec.width
    if len(shape) == 1 and width == 1:
        shape = [shape[0], 1]
    if len(shape) != 2 or (width != -1 and shape[1] != width) or shape[0] == 0:
        raise V2Error(400, f"input {INPUT!r} has shape {shape}, {_expected(spec)}")
    arr = tensors.read(INPUT, datatype, math.prod(shape)).reshape(shape)
    source = f"inputs[{INPUT!r}]"
    if model.array_dtype is not None and arr.dtype.kind in "biuf":
        return Batch(rows=[], source=source, kind="rows", array=arr.astype(model.array_dtype, copy=False))
    signature: Signature | None = model.signature
    columns = signature.column_names if signature is not None else None
    return Batch(rows=arr.tolist(), source=source, kind="rows", columns=columns)


def _column_tensors(tensors: _Tensors, spec: V2Model) -> Batch:
    columns = []
    rows = None
    for name, wanted in spec.columns:
        datatype, shape = _tensor_header(tensors.inputs[name])
        if not _fits(datatype, wanted):
            raise V2Error(400, f"input {name!r} has datatype {datatype}, the column takes {wanted}")
        if len(shape) == 2 and shape[1] == 1:
            shape = [shape[0]]
        if len(shape) != 1 or shape[0] == 0 or (rows is not None and shape[0] != rows):
            raise V2Error(
                400,
                f"input {name!r} has shape {shape}; send every column as a [rows] tensor of the same length",
            )
        rows = shape[0]
        columns.append(tensors.read(name, datatype, rows).tolist())
    names = tuple(c for c, _ in spec.columns)
    return Batch(
        rows=[list(r) for r in zip(*columns, strict=True)], source="inputs", kind="rows", columns=names
    )


def encode_infer(predictions: list[Any], spec: V2Model, request: InferRequest) -> tuple[bytes, int | None]:
    """The response body for ``predictions``, and the length of its JSON part when binary.

    Raises:
        TypeError: for predictions that are not numbers, booleans or strings.
    """
    import numpy as np

    arr = np.asarray(predictions)
    kind = arr.dtype.kind
    if kind == "b":
        datatype = "BOOL"
    elif kind in "iu":
        datatype = "INT64" if arr.dtype.itemsize == 8 or kind == "u" else "INT32"
        arr = arr.astype("int64" if datatype == "INT64" else "int32", copy=False)
    elif kind == "f":
        datatype = "FP32" if arr.dtype == np.float32 else "FP64"
    elif kind in "US" or (kind == "O" and all(isinstance(v, str) for v in arr.reshape(-1).tolist())):
        datatype = "BYTES"
    else:
        raise TypeError(f"cannot send predictions of type {arr.dtype} as a tensor")
    output: dict[str, Any] = {"name": OUTPUT, "datatype": datatype, "shape": list(arr.shape)}
    raw = b""
    if request.binary_output:
        if datatype == "BYTES":
            raw = b"".join(
                struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in arr.reshape(-1).tolist())
            )
        else:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = arr.reshape(-1).tolist()
    response: dict[str, Any] = {"model_name": spec.name}
    if spec.version:
        response["model_version"] = spec.version
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = [output]
    head = dumps(response)
    if request.binary_output:
        return head + raw, len(head)
    return head, None
