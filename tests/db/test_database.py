"""The runtime's database access: deadlines bound SQL, cancelled calls cancel their query,
an exhausted pool answers RESOURCE_EXHAUSTED, and sessions hold their service's role."""
import asyncio
import math
import time

import psycopg
import pytest
import sqlalchemy.exc
from google.rpc.error_details_pb2 import RetryInfo
from sqlalchemy import text

from aos_runtime.db import Database, call_deadline
from aos_runtime.errors import from_exception
from aos_runtime.faults import DeadlinePassed, PoolExhausted
from tests.logins import login_url

pytestmark = pytest.mark.db


def sleep(conn, seconds: float):
    return conn.execute(text("SELECT pg_sleep(:s)"), {"s": seconds}).scalar()


def whoami(conn):
    return conn.execute(text("SELECT current_user, current_setting('transaction_read_only'), "
                             "current_setting('aos.tenant_id', true)")).one()


async def test_sessions_hold_the_service_role_and_tenant(database_url):
    for service, role, read_only in (("logs", "aos_logs", "on"), ("export", "aos_export", "off")):
        db = Database(login_url(database_url, service), service=service, pool_size=1)
        assert tuple(await db.run("tenant-x", whoami)) == (role, read_only, "tenant-x")
        await db.close()


async def test_the_deadline_bounds_the_query(database_url):
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    call_deadline.set(time.monotonic() + 0.3)
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError) as err:
        await db.run("t", sleep, 5)
    assert isinstance(err.value.orig, psycopg.errors.QueryCanceled)
    assert time.monotonic() - started < 2
    call_deadline.set(None)
    await db.close()


async def test_a_cancelled_call_cancels_its_query(database_url):
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    task = asyncio.create_task(db.run("t", sleep, 30))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    def sleeping():
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                                "AND state = 'active'").fetchone()[0]

    for _ in range(50):
        if await asyncio.to_thread(sleeping) == 0:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(sleeping) == 0
    # The connection came back to the pool usable.
    assert tuple(await db.run("t", whoami))[0] == "aos_logs"
    await db.close()


async def test_an_exhausted_pool_answers_resource_exhausted(database_url):
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1, pool_timeout_s=0.3)
    await db.run("t", sleep, 0.2)  # one transaction's time: the retry delay's estimate
    busy = asyncio.create_task(db.run("t", sleep, 2))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(PoolExhausted) as err:
        await db.run("t", whoami)
    assert time.monotonic() - started < 1.5
    answer = from_exception(err.value, deadline_passed=False)
    assert (answer.code.name, answer.reason) == ("RESOURCE_EXHAUSTED", "DATABASE_POOL_EXHAUSTED")
    # google.rpc.RetryInfo: about one recent transaction's time, not a constant.
    assert 0.2 <= err.value.retry_after_s < 1
    (info,) = [d for d in answer.details if isinstance(d, RetryInfo)]
    assert info.retry_delay.ToMilliseconds() == math.ceil(err.value.retry_after_s * 1000)
    await busy
    await db.close()


async def test_time_in_the_queue_counts_against_the_deadline(database_url):
    """The statement timeout is what the call has left when its transaction starts, and a
    call whose deadline passed while it queued never reaches the database."""
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    ran = []

    def timeout_now(conn):
        ran.append(True)
        return conn.execute(text("SELECT current_setting('statement_timeout')")).scalar()

    busy = asyncio.create_task(db.run("t", sleep, 0.6))
    await asyncio.sleep(0.1)
    call_deadline.set(time.monotonic() + 2.0)
    timeout = await db.run("t", timeout_now)  # queued ~0.5 s behind the busy call
    assert timeout.endswith("ms") and 1000 < int(timeout[:-2]) <= 1550, timeout
    await busy

    ran.clear()
    call_deadline.set(None)
    busy = asyncio.create_task(db.run("t", sleep, 0.6))
    await asyncio.sleep(0.1)
    call_deadline.set(time.monotonic() + 0.2)
    with pytest.raises(DeadlinePassed) as err:
        await db.run("t", timeout_now)
    assert from_exception(err.value, deadline_passed=True).code.name == "DEADLINE_EXCEEDED" and ran == []
    call_deadline.set(None)
    await busy
    await db.close()


# --- Database.stream: a streaming read with run()'s transaction, timeouts and cancellation ---

def numbered(conn, count: int):
    """``count`` rows through a server-side cursor, each with its transaction and tenant."""
    result = conn.execute(text("SELECT n, txid_current(), current_setting('aos.tenant_id', true) "
                               "FROM generate_series(1, :count) n"), {"count": count},
                          execution_options={"stream_results": True, "yield_per": 1})
    for row in result:
        yield tuple(row)


def _sleeping_queries(database_url) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                            "AND state = 'active'").fetchone()[0]


async def test_a_stream_yields_every_item_in_one_scoped_transaction(database_url):
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    rows = [row async for row in db.stream("tenant-s", numbered, 50)]
    assert [n for n, _, _ in rows] == list(range(1, 51))
    assert {(txid, tenant) for _, txid, tenant in rows} == {(rows[0][1], "tenant-s")}
    await db.close()


async def test_a_stream_left_early_gives_its_connection_back(database_url):
    """A consumer that stops after one item (a client that hangs up mid-download) must not
    leave the pool thread waiting to hand over the next item, holding the only connection."""
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1, pool_timeout_s=2)
    for _ in range(3):  # each time: the connection came back, or the next stream would be refused
        stream = db.stream("t", numbered, 10_000)
        assert (await anext(stream))[0] == 1
        await stream.aclose()
        assert tuple(await db.run("t", whoami))[0] == "aos_logs"
    await db.close()


async def test_a_cancelled_stream_cancels_its_query(database_url):
    def slow(conn):
        yield "first"
        yield conn.execute(text("SELECT pg_sleep(30)")).scalar()

    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1, pool_timeout_s=2)
    stream = db.stream("t", slow)
    assert await anext(stream) == "first"
    waiting = asyncio.ensure_future(anext(stream))
    for _ in range(50):
        if await asyncio.to_thread(_sleeping_queries, database_url):
            break
        await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    started = time.monotonic()
    assert tuple(await db.run("t", whoami))[0] == "aos_logs"
    assert time.monotonic() - started < 2 and await asyncio.to_thread(_sleeping_queries, database_url) == 0
    await db.close()


async def test_a_stream_raises_what_its_work_raised(database_url):
    def failing(conn):
        yield 1
        conn.execute(text("SELECT 1 / 0"))
        yield 2

    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    got = []
    with pytest.raises(sqlalchemy.exc.DataError):
        async for item in db.stream("t", failing):
            got.append(item)
    assert got == [1]
    await db.close()


async def test_the_deadline_bounds_a_streams_query(database_url):
    def slow(conn):
        yield conn.execute(text("SELECT pg_sleep(5)")).scalar()

    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    call_deadline.set(time.monotonic() + 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as err:
            [item async for item in db.stream("t", slow)]
    finally:
        call_deadline.set(None)
    assert isinstance(err.value.orig, psycopg.errors.QueryCanceled) and time.monotonic() - started < 2
    await db.close()
