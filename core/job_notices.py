"""Finished-job notices: a job's end announced on a Redis channel of its own, which
``POST /predict`` waits on instead of polling the database.

The jobs a unit of work finishes are handed on after its commit (``db/status.py``,
``db.session.after_commit``); ``core.dispatch.Dispatcher.after_commit`` announces them.
A lost notice only delays a waiter: it checks the database before and after waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress

import redis
import redis.asyncio

logger = logging.getLogger(__name__)


def finished_channel(job_id: int) -> str:
    """The Redis channel on which a job's end is announced."""
    return f"tumorseg:job-finished:{job_id}"


class JobNotices:
    """Announces finished jobs and waits for them, on the broker's Redis.

    Args:
        client: A redis-py client on the broker (``core.broker.redis_client``).
        url: Its URL, for the asyncio clients that wait.
    """

    def __init__(self, client: redis.Redis, url: str) -> None:
        self.client = client
        self.url = url

    def announce(self, job_ids: Sequence[int]) -> None:
        """Publish that these jobs finished (a lost notice only delays a waiter)."""
        try:
            for job_id in job_ids:
                self.client.publish(finished_channel(job_id), str(job_id))
        except redis.RedisError as exc:
            logger.warning("finished-job notice for %s not sent: %s", list(job_ids), exc)

    @asynccontextmanager
    async def watch(self, job_id: int) -> AsyncIterator[Callable[[float], Awaitable[bool]]]:
        """Subscribe to the job's end and yield ``wait(timeout)``: True once the end is
        announced, False after ``timeout`` seconds (always so when Redis could not be
        subscribed to; the end may still come from a recovery pass once it is back).
        Check the database inside, then wait, so that an end between the two is seen."""
        client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=2)
        pubsub = client.pubsub()

        async def wait(timeout: float) -> bool:
            if not pubsub.subscribed:
                await asyncio.sleep(timeout)
                return False
            with suppress(TimeoutError, redis.RedisError):
                async with asyncio.timeout(timeout):
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            return True
            return False

        try:
            try:
                await pubsub.subscribe(finished_channel(job_id))
                await pubsub.get_message(timeout=2)  # the confirmation: Redis has subscribed us
            except redis.RedisError as exc:
                logger.warning("job %d: no finished-job notice to wait for (%s)", job_id, exc)
            yield wait
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py: no hints
            await client.aclose()
