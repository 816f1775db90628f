"""psycopg 3 through jitgate with no rules, sync and async, with psycopg_pool:
a pool whose reset binds set_config parameters, an identity change refused
at Bind, a DO block's notice, a syntax error's SQLSTATE and position, a
sibling backend terminated, LATIN9 text. Run by crates/enforcer/tests/psycopg.rs."""
import asyncio
import sys

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

DSN = sys.argv[1]


def reset(conn):
    # What a pool does between borrowers; the parameters are bound (Bind).
    conn.execute("RESET ALL")
    conn.execute("SELECT set_config(%s, %s, false)", ("default_transaction_isolation", "read committed"))


def sync_part():
    with ConnectionPool(DSN, min_size=1, max_size=2, kwargs={"autocommit": True}, reset=reset) as pool:
        for _ in range(3):
            with pool.connection() as conn:
                v = conn.execute("SELECT set_config(%s, %s, false)", ("work_mem", "8MB")).fetchone()[0]
                assert v == "8MB", v
        with pool.connection() as conn:
            try:
                conn.execute("SELECT set_config(%s, %s, false)", ("role", "app_write"))
                raise SystemExit("identity change allowed")
            except psycopg.errors.InsufficientPrivilege as e:
                assert "identity" in str(e), e
            notices = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from psycopg'; END $$")
            assert notices == ["hello from psycopg"], notices
            try:
                conn.execute("SELECT 1 FROM FROM orders")
                raise SystemExit("syntax error passed")
            except psycopg.errors.SyntaxError as e:
                assert e.diag.statement_position == "15", e.diag.statement_position
            with psycopg.connect(DSN, autocommit=True) as sibling:
                pid = sibling.execute("SELECT pg_backend_pid()").fetchone()[0]
                ok = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
                assert ok is True
            conn.execute("SET client_encoding TO 'LATIN9'")
            got = conn.execute("SELECT %s || ' ñ'", ("café €",)).fetchone()[0]
            assert got == "café € ñ", got
            conn.execute("SET client_encoding TO 'UTF8'")


async def areset(conn):
    await conn.execute("RESET ALL")
    await conn.execute("SELECT set_config(%s, %s, false)", ("default_transaction_isolation", "read committed"))


async def async_part():
    async with AsyncConnectionPool(DSN, min_size=1, max_size=2, kwargs={"autocommit": True},
                                   reset=areset, open=False) as pool:
        async def one(i):
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT bump(%s)", (i,))
                return (await cur.fetchone())[0]
        assert await asyncio.gather(*(one(i) for i in range(6))) == [1, 2, 3, 4, 5, 6]
        async with pool.connection() as conn:
            try:
                await conn.execute("SELECT set_config(%s, %s, false)", ("session_authorization", "postgres"))
                raise SystemExit("identity change allowed")
            except psycopg.errors.InsufficientPrivilege:
                pass


sync_part()
asyncio.run(async_part())
print("psycopg ok")
