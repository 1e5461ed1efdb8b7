"""Admission, as every caller gets it (the two front-ends and programmatic invokers): a lease
that counts the invocation in flight and in the metrics exactly once, a refusal (429, 503), or
"hold" while the function is expected back; a held caller learns at once when holding ends."""

from __future__ import annotations

import asyncio

from faaso.gateway.admission import HOLD, Admission, Lease, Refusal
from faaso.gateway.metrics import Metrics
from faaso.gateway.pools import Pools
from faaso.spec.endpoint import Endpoint

EP = Endpoint("127.0.0.1", 9)


def admission(limit: int | None = None, timeout: float = 60.0) -> Admission:
    return Admission(Pools(), lambda _n: timeout, lambda _n: limit, Metrics())


def test_a_lease_counts_in_flight_and_finishes_once() -> None:
    adm = admission()
    adm.pools.get("f").add("f-0", EP)
    lease = adm.try_admit("f")
    assert isinstance(lease, Lease)
    assert adm.pools.get("f").inflight() == 1
    lease.finish(200)
    lease.finish(500)  # a second ending is not counted
    assert adm.pools.get("f").inflight() == 0
    assert adm.metrics is not None and adm.metrics.invocations("f") == 1
    assert 'code="200"' in adm.metrics.render().decode()
    assert 'code="500"' not in adm.metrics.render().decode()


def test_max_inflight_refuses_with_429_and_counts_it() -> None:
    adm = admission(limit=1)
    adm.pools.get("f").add("f-0", EP)
    first = adm.try_admit("f")
    assert isinstance(first, Lease)
    second = adm.try_admit("f")
    assert isinstance(second, Refusal) and second.status == 429
    assert "max_inflight" in second.message
    assert adm.metrics is not None and adm.metrics.invocations("f") == 1


def test_no_instance_is_503_unless_holding() -> None:
    adm = admission()
    refusal = adm.try_admit("f")
    assert isinstance(refusal, Refusal) and refusal.status == 503
    adm.pools.get("g").holding = True
    assert adm.try_admit("g") is HOLD
    assert adm.metrics is not None and adm.metrics.invocations("g") == 0  # nothing counted yet


async def test_a_held_caller_gets_the_instance_that_comes() -> None:
    adm = admission()
    pool = adm.pools.get("f")
    pool.holding = True
    task = asyncio.create_task(adm.admit("f"))
    await asyncio.sleep(0)  # one loop turn, not a readiness wait: the task is now held
    assert not task.done()
    pool.add("f-0", EP)
    lease = await asyncio.wait_for(task, 5)
    assert isinstance(lease, Lease) and lease.member.instance_id == "f-0"


async def test_a_held_caller_is_refused_as_soon_as_holding_ends() -> None:
    """Holding ends without an instance (scaled down, removed): the caller gets its 503 then,
    not when its 60 s timeout runs out."""
    adm = admission(timeout=60.0)
    adm.pools.get("f").holding = True
    adm.pools.get("g").holding = True
    held_f = asyncio.create_task(adm.admit("f"))
    held_g = asyncio.create_task(adm.admit("g"))
    await asyncio.sleep(0)  # one loop turn, not a readiness wait: both tasks are now held
    adm.pools.get("f").holding = False
    adm.pools.drop("g")
    for task in (held_f, held_g):
        refusal = await asyncio.wait_for(task, 5)
        assert isinstance(refusal, Refusal) and refusal.status == 503


def test_retry_elsewhere_moves_the_lease() -> None:
    adm = admission()
    pool = adm.pools.get("f")
    pool.add("f-0", EP)
    pool.add("f-1", EP)
    lease = adm.try_admit("f")
    assert isinstance(lease, Lease)
    first = lease.member.instance_id
    other = lease.retry_elsewhere({first})
    assert other is not None and other.instance_id != first
    assert [m.inflight for m in pool.members() if m.instance_id == first] == [0]
    assert lease.retry_elsewhere({"f-0", "f-1"}) is None
    lease.finish(200)
    assert pool.inflight() == 0
