from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_KIND_UNSPECIFIED: _ClassVar[AccessKind]
    ACCESS_KIND_VIEW: _ClassVar[AccessKind]
    ACCESS_KIND_LIST: _ClassVar[AccessKind]
ACCESS_KIND_UNSPECIFIED: AccessKind
ACCESS_KIND_VIEW: AccessKind
ACCESS_KIND_LIST: AccessKind
REQUIRED_SCOPE_FIELD_NUMBER: _ClassVar[int]
required_scope: _descriptor.FieldDescriptor
HEAVY_FIELD_NUMBER: _ClassVar[int]
heavy: _descriptor.FieldDescriptor
ACCESS_FIELD_NUMBER: _ClassVar[int]
access: _descriptor.FieldDescriptor
CANONICAL_NAME_FIELD_NUMBER: _ClassVar[int]
canonical_name: _descriptor.FieldDescriptor

class EvidenceAccess(_message.Message):
    __slots__ = ("kind", "entity_type", "id_field")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    kind: AccessKind
    entity_type: str
    id_field: str
    def __init__(self, kind: _Optional[_Union[AccessKind, str]] = ..., entity_type: _Optional[str] = ..., id_field: _Optional[str] = ...) -> None: ...
