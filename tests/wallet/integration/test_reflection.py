"""Server reflection over real gRPC: v1 (what newer grpcurl and Postman ask for) and v1alpha.

A client of either lists the same services, resolves the wallet's contract from them with no
proto files, and can describe the v1 reflection service itself; the v1 descriptor the server
hands out has the published v1 messages, so a client built from it alone works.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2

from wallet_core.api.reflection import V1_FILE_NAME, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME
from wallet_core.server import Running

WALLET = "wallet.v1.WalletService"
WALLET_FILE = "wallet/v1/wallet_service.proto"
BOTH = [V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
# grpc.reflection.v1's messages as published (grpc/grpc-proto, grpc/reflection/v1/
# reflection.proto): field name -> number. Written out here, not read from the server or
# from grpcio-reflection, so a wrong derivation of the v1 file shows.
PUBLISHED_V1_FIELDS = {
    "ServerReflectionRequest": {"host": 1, "file_by_filename": 3, "file_containing_symbol": 4,
                                "file_containing_extension": 5,
                                "all_extension_numbers_of_type": 6, "list_services": 7},
    "ExtensionRequest": {"containing_type": 1, "extension_number": 2},
    "ServerReflectionResponse": {"valid_host": 1, "original_request": 2,
                                 "file_descriptor_response": 4,
                                 "all_extension_numbers_response": 5,
                                 "list_services_response": 6, "error_response": 7},
    "FileDescriptorResponse": {"file_descriptor_proto": 1},
    "ExtensionNumberResponse": {"base_type_name": 1, "extension_number": 2},
    "ListServiceResponse": {"service": 1},
    "ServiceResponse": {"name": 1},
    "ErrorResponse": {"error_code": 1, "error_message": 2},
}


async def ask(server: Running, service: str, requests: Iterable[Any],
              request_type: Any = reflection_pb2.ServerReflectionRequest,
              response_type: Any = reflection_pb2.ServerReflectionResponse) -> list[Any]:
    """Send `requests` on one ServerReflectionInfo stream of `service`; the answers, in order.
    The message classes default to v1alpha's, which are v1's on the wire."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        info = channel.stream_stream(f"/{service}/ServerReflectionInfo",
                                     request_serializer=request_type.SerializeToString,
                                     response_deserializer=response_type.FromString)
        return [r async for r in info(iter(list(requests)), timeout=5)]


def pool_of(response: Any) -> descriptor_pool.DescriptorPool:
    """A pool of the files in a file_descriptor_response, added imports first."""
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in response.file_descriptor_response.file_descriptor_proto]
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    while files:
        ready = [f for f in files if set(f.dependency) <= added]
        assert ready, f"the answer misses imports of {[f.name for f in files]}"
        for file in ready:
            pool.AddSerializedFile(file.SerializeToString())
            added.add(file.name)
            files.remove(file)
    return pool


@pytest.mark.parametrize("service", BOTH)
async def test_lists_both_reflection_services_and_the_wallet(server: Running,
                                                             service: str) -> None:
    """ListServices through v1 and through v1alpha names the wallet, health and both
    reflection services, with no token."""
    [answer] = await ask(server, service, [reflection_pb2.ServerReflectionRequest(list_services="")])
    names = {s.name for s in answer.list_services_response.service}
    assert names == {WALLET, "grpc.health.v1.Health", V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME}


@pytest.mark.parametrize("service", BOTH)
async def test_resolves_the_wallet_contract(server: Running, service: str) -> None:
    """file_containing_symbol and file_by_filename return the wallet's file with its imports,
    enough to build WalletService's methods and messages with no proto files."""
    by_symbol, by_name = await ask(server, service, [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=WALLET),
        reflection_pb2.ServerReflectionRequest(file_by_filename=WALLET_FILE)])
    for answer in (by_symbol, by_name):
        wallet = pool_of(answer).FindServiceByName(WALLET)
        assert wallet.file.name == WALLET_FILE
        bet = wallet.methods_by_name["Bet"]
        assert (bet.input_type.full_name, bet.output_type.full_name) == (
            "wallet.v1.BetRequest", "wallet.v1.BetResponse")
        assert bet.input_type.fields_by_name["amount"].number == 3
        balances = wallet.methods_by_name["GetBalance"].output_type.fields_by_name["balances"]
        assert balances.message_type is not None
        assert balances.message_type.full_name == "wallet.v1.Balances"


@pytest.mark.parametrize("service", BOTH)
async def test_describes_the_v1_reflection_service_as_published(server: Running,
                                                                service: str) -> None:
    """Either reflection service describes grpc.reflection.v1.ServerReflection (a client that
    lists services may ask), as the published v1 file: its package, one bidirectional
    streaming method, and the v1 messages with their published field numbers."""
    [answer] = await ask(server, service, [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=V1_SERVICE_NAME)])
    pool = pool_of(answer)
    service_descriptor = pool.FindServiceByName(V1_SERVICE_NAME)
    assert service_descriptor.file.name == V1_FILE_NAME
    assert service_descriptor.file.package == "grpc.reflection.v1"
    method = service_descriptor.methods_by_name["ServerReflectionInfo"]
    assert method.client_streaming and method.server_streaming
    assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type.full_name == "grpc.reflection.v1.ServerReflectionResponse"
    for name, fields in PUBLISHED_V1_FIELDS.items():
        message = pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}")
        assert {f.name: f.number for f in message.fields} == fields, name
        for field in message.fields:
            if field.message_type is not None:
                assert field.message_type.file.name == V1_FILE_NAME, (name, field.name)
    assert [f.name for f in pool.FindMessageTypeByName(
        "grpc.reflection.v1.ServerReflectionRequest").oneofs_by_name[
        "message_request"].fields] == ["file_by_filename", "file_containing_symbol",
                                       "file_containing_extension",
                                       "all_extension_numbers_of_type", "list_services"]


async def test_a_client_built_from_the_served_v1_descriptor_works(server: Running) -> None:
    """A client that knows only what v1 reflection told it (as grpcurl does) speaks v1 with
    the server: it lists the services and resolves the wallet and its error details."""
    [answer] = await ask(server, V1_SERVICE_NAME, [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=V1_SERVICE_NAME)])
    pool = pool_of(answer)
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse"))
    listed, wallet, error_info = await ask(
        server, V1_SERVICE_NAME,
        [request(list_services=""), request(file_containing_symbol=WALLET),
         request(file_containing_symbol="google.rpc.ErrorInfo")],
        request_type=request, response_type=response)
    assert WALLET in {s.name for s in listed.list_services_response.service}
    assert listed.original_request.list_services == ""
    assert pool_of(wallet).FindServiceByName(WALLET).methods_by_name["Deposit"]
    assert pool_of(error_info).FindMessageTypeByName("google.rpc.ErrorInfo").fields_by_name[
        "reason"].number == 1


@pytest.mark.parametrize("service", BOTH)
async def test_an_unknown_symbol_is_not_found(server: Running, service: str) -> None:
    """A symbol the server does not serve answers an error_response NOT_FOUND on the stream,
    which stays open for the next request."""
    missing, listed = await ask(server, service, [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="wallet.v1.NoSuchThing"),
        reflection_pb2.ServerReflectionRequest(list_services="")])
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert listed.list_services_response.service


def test_the_process_wide_descriptor_pool_is_left_alone(server: Running) -> None:
    """The v1 file lives only in reflection's own pool: nothing is added to the default pool,
    where a later grpcio-reflection's v1 module would collide with it."""
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindFileByName(V1_FILE_NAME)
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindServiceByName(V1_SERVICE_NAME)
