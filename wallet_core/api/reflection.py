"""Server reflection under both names clients ask for: grpc.reflection.v1 and v1alpha.

grpcio-reflection (1.85) serves only `grpc.reflection.v1alpha.ServerReflection`; newer grpcurl
and Postman ask for `grpc.reflection.v1.ServerReflection` first. v1 is v1alpha promoted: the
same messages with the same field numbers and types, under another package, so the bytes on
the wire are the same. One servicer therefore answers both: grpcio-reflection's asyncio
servicer is registered under its own name and, with the same (v1alpha) serializers, under
the v1 name.

A client that lists the services may then ask for the v1 service's own descriptor, so the
pool the servicer answers from holds a v1 file too. It is derived from v1alpha's descriptor
(package renamed, v1's published file options) rather than compiled from a second .proto:
protoc would put it in gen/grpc/, which would shadow the grpc package, and the copy could
drift from the messages the servicer actually speaks.

The pool is private, not the process-wide default: nothing global changes, a later
grpcio-reflection shipping its own v1 module cannot collide with ours, and reflection shows
exactly what we chose: the files of the services served, their imports, and the error
detail types our errors carry (google.rpc.ErrorInfo, RetryInfo), which grpcurl resolves to
print an error's details.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer  # reflection.aio, for type checkers

V1ALPHA_SERVICE_NAME = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"
# The files reflection offers besides the services' own: the google.rpc.Status the rich error
# travels in and the details wallet_core/api/errors.py and rate_limit.py put in it.
ERROR_DETAIL_FILES = (status_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR)


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's file with the package renamed, every
    type reference moved along, and the file options the published v1 file carries (it is not
    deprecated, as v1alpha is)."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    if proto.package != _V1ALPHA_PACKAGE:  # grpcio-reflection moved it: the rename below is wrong
        raise RuntimeError(f"v1alpha reflection file has package {proto.package!r}")
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    proto.name, proto.package = V1_FILE_NAME, _V1_PACKAGE
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(old, new, 1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    proto.options.Clear()
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_multiple_files = True
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    return proto


def reflection_pool(files: Iterable[descriptor.FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """A new pool holding `files`, everything they import (imports first, as a pool needs)
    and the v1 reflection file."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: descriptor.FileDescriptor) -> None:
        if file.name in added:
            return
        added.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.AddSerializedFile(proto.SerializeToString())

    for file in files:
        add(file)
    pool.AddSerializedFile(v1_file().SerializeToString())
    return pool


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection, v1 and v1alpha, listing `service_names` and both reflection services.

    Every name must be a service in the default pool (its generated module imported): the
    pool reflection answers from is built from their files, so a name reflection could list
    but not describe fails here, at start-up.
    """
    default = descriptor_pool.Default()
    names = sorted({*service_names, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME})
    files = [default.FindFileContainingSymbol(name) for name in names if name != V1_SERVICE_NAME]
    pool = reflection_pool([*files, *ERROR_DETAIL_FILES])
    servicer = ReflectionServicer(names, pool=pool)
    for service_name in (V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME):
        handlers = {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service_name, handlers),))
