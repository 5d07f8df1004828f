"""Alembic environment: migrations run synchronously, each in its own transaction.

The URL comes from the runtime (``aos_runtime.migrate``), never from alembic.ini,
so the CLI, the services and the tests migrate the same database the same way.
"""
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:
    # Serialise concurrent migrators (several services starting at once against
    # one database): the second waits, then finds nothing left to do. The lock
    # is session-level, so it outlives the commit that ends this statement.
    connection.exec_driver_sql("SELECT pg_advisory_lock(7316204011)")
    connection.commit()
    try:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.exec_driver_sql("SELECT pg_advisory_unlock(7316204011)")
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: the schema relies on live DO blocks")
run_migrations_online()
