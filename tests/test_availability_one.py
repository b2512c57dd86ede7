"""A one-query GetAvailability takes its own path (no numpy columns); it must answer exactly as
the same query does inside a longer request, which takes the columnar path: results, statuses,
quantities, `available_by_date`, and the same errors with the same ErrorInfo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from omnistock.v1 import availability_pb2, supply_pb2, types_pb2
from tests.test_rpc import Stubs, error_info, serving_stubs, stock, uid

pytestmark = pytest.mark.asyncio(loop_scope="module")

Q = availability_pb2.AvailabilityQuery


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stubs]:
    async with serving_stubs(tmp_path_factory.mktemp("one")) as s:
        yield s


async def _answer(stubs: Stubs, queries: list[Any]) -> Any:
    return await stubs.availability.GetAvailability(
        availability_pb2.GetAvailabilityRequest(queries=queries)
    )


async def _error(stubs: Stubs, queries: list[Any]) -> tuple[Any, ...]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _answer(stubs, queries)
    exc = raised.value
    info = error_info(exc)
    return exc.code(), exc.details(), info.reason, dict(info.metadata)


async def test_one_query_answers_as_the_columnar_path(stubs: Stubs) -> None:
    sku, other, n1, n2, off, group = (
        uid("sku"), uid("sku"), uid("node"), uid("node"), uid("node"), uid("group"),
    )  # fmt: skip
    await stock(stubs, sku, n1, 10)
    await stock(stubs, sku, n2, 5)
    await stock(stubs, other, n1, 7)
    await stock(stubs, sku, off, 4)
    disabled = types_pb2.Node(node_id=off, enabled=False, ship=True)
    await stubs.supply.UpsertNodes(supply_pb2.UpsertNodesRequest(nodes=[disabled]))
    await stubs.supply.UpsertGroups(
        supply_pb2.UpsertGroupsRequest(
            groups=[types_pb2.Group(group_id=group, node_ids=[n1, n2], buffer_units=2)]
        )
    )
    promise = 2**40
    queries = [
        Q(sku=sku, node_id=n1),
        Q(sku=sku, node_id=off),  # NODE_DISABLED: buckets zeroed as in the columnar path
        Q(sku=sku, group_id=group),
        Q(sku=sku),
        Q(sku=uid("nosku"), node_id=n1),
        Q(sku=uid("nosku")),
        Q(sku=sku, node_id=uid("nonode")),
        Q(sku=sku, group_id=uid("nogroup")),
        Q(sku=sku, node_id=n1, promise_by_ms=promise),
        Q(sku=sku, group_id=group, promise_by_ms=promise),
        Q(sku=sku, promise_by_ms=promise),
        Q(sku=sku, node_id=off, promise_by_ms=promise),
    ]
    filler = Q(sku=other, node_id=n1)
    statuses = set()
    for query in queries:
        one = await _answer(stubs, [query])
        many = await _answer(stubs, [query, filler])
        assert len(one.results) == 1
        assert one.results[0] == many.results[0], query
        assert one.results[0].query == query
        statuses.add(one.results[0].status)
    assert statuses == {
        types_pb2.LINE_STATUS_OK,
        types_pb2.LINE_STATUS_NODE_DISABLED,
        types_pb2.LINE_STATUS_UNKNOWN_SKU,
        types_pb2.LINE_STATUS_UNKNOWN_NODE,
        types_pb2.LINE_STATUS_UNKNOWN_GROUP,
    }
    first = (await _answer(stubs, [queries[0]])).results[0]
    assert first.quantities.on_hand == 10 and first.quantities.available == 10
    dated = (await _answer(stubs, [queries[9]])).results[0]
    assert dated.available_by_date == dated.quantities.available == 11  # 2 held back per node


@pytest.mark.parametrize(
    "query",
    [
        Q(sku=""),
        Q(sku="a" * 129),
        Q(sku="a", node_id=""),
        Q(sku="a", group_id=""),
        Q(sku="a", node_id="n" * 129),
        Q(sku="a", group_id="g" * 129),
        Q(sku="a", promise_by_ms=-1),
        # Few characters, too many UTF-8 bytes (the one-query path's length shortcut).
        Q(sku="é" * 65),
        Q(sku="a", node_id="😀" * 33),
        Q(sku="a", group_id="😀" * 33),
    ],
)
async def test_one_query_errors_as_the_columnar_path(stubs: Stubs, query: Any) -> None:
    one = await _error(stubs, [query])
    many = await _error(stubs, [query, Q(sku="b")])
    assert one == many
    assert one[0] == grpc.StatusCode.INVALID_ARGUMENT and one[2] == "FIELD_INVALID"
    assert one[3]["field"].startswith("queries[0].")
