"""A test-only service with what the contracts do not use yet but the gateway must handle:
repeated and nested query fields, maps, a recursive message, a body bound to one field."""
from __future__ import annotations

import functools

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2  # noqa: F401 - a dependency
from google.protobuf.descriptor import ServiceDescriptor

from aos.evidence.v1 import options_pb2

F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = "") -> F:
    field = F(name=name, number=number, type=kind, json_name=_camel(name),
              label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:  # a proto2 field: set even when empty, which a scalar must not be
        field.type_name = type_name
    return field


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _method(name: str, rule: http_pb2.HttpRule) -> descriptor_pb2.MethodDescriptorProto:
    method = descriptor_pb2.MethodDescriptorProto(name=name, input_type=".gwtest.Thing", output_type=".gwtest.Thing")
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    method.options.Extensions[options_pb2.required_scope] = "logs.read"
    return method


@functools.cache
def service() -> ServiceDescriptor:
    file = descriptor_pb2.FileDescriptorProto(
        name="gateway_tests/synthetic.proto", package="gwtest", syntax="proto3",
        dependency=["google/api/annotations.proto", "google/protobuf/timestamp.proto",
                    "aos/evidence/v1/options.proto"])
    kind = file.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSPECIFIED", number=0)
    kind.value.add(name="KIND_A", number=1)
    kind.value.add(name="KIND_B", number=2)
    file.message_type.add(name="Filter", field=[
        _field("tags", 1, F.TYPE_STRING, repeated=True),
        _field("kind", 2, F.TYPE_ENUM, type_name=".gwtest.Kind"),
        _field("after", 3, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"),
        _field("big", 4, F.TYPE_INT64),
        _field("flag", 5, F.TYPE_BOOL),
    ])
    thing = file.message_type.add(name="Thing", field=[
        _field("name", 1, F.TYPE_STRING),
        _field("filter", 2, F.TYPE_MESSAGE, type_name=".gwtest.Filter"),
        _field("kinds", 3, F.TYPE_ENUM, repeated=True, type_name=".gwtest.Kind"),
        _field("child", 4, F.TYPE_MESSAGE, type_name=".gwtest.Thing"),
        _field("labels", 5, F.TYPE_MESSAGE, repeated=True, type_name=".gwtest.Thing.LabelsEntry"),
    ])
    entry = thing.nested_type.add(name="LabelsEntry", field=[
        _field("key", 1, F.TYPE_STRING), _field("value", 2, F.TYPE_STRING)])
    entry.options.map_entry = True
    file.service.add(name="Things", method=[
        _method("GetThing", http_pb2.HttpRule(get="/v1/things/{name}")),
        _method("PatchThing", http_pb2.HttpRule(patch="/v1/things/{name}", body="filter")),
    ])
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(file.SerializeToString())
    return pool.FindServiceByName("gwtest.Things")
