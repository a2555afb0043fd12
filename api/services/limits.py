"""Admission control for submissions: a per-key token bucket and queue back-pressure.

Both live in Redis, the broker the API already needs. When Redis cannot answer, the
checks let the request through (fail open): the job is stored and its studies stay
queued until the recovery pass can send them (``core/dispatch.py``), so a job is never
half-created by a limit check.
"""

from __future__ import annotations

import logging
import math

import redis

from api.services.errors import ServiceError
from config.settings import Settings
from core.broker import redis_client
from core.dispatch import Dispatcher

logger = logging.getLogger(__name__)

#: Token bucket: KEYS[1] hash {tokens, ts}; ARGV rate/s, burst, cost. The clock is the
#: Redis server's, so API replicas with skewed clocks share one bucket correctly.
#: Returns {allowed 0|1, seconds until enough tokens (string)}.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(wait)}
"""


class Admission:
    """Decides whether a key may submit now; raises 429 or 503 service errors."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        #: The limiter's own client on the broker.
        self.redis = redis_client(dispatcher.redis_url)
        self._bucket = self.redis.register_script(_BUCKET_LUA)

    def check_rate(self, key_id: int) -> None:
        """Take one submission token of the key's bucket.

        Raises:
            ServiceError: 429 with ``Retry-After`` when the bucket is empty.
        """
        rate = self.settings.submit_rate_per_minute / 60.0
        try:
            allowed, wait = self._bucket(
                keys=[f"tumorseg:rate:{key_id}"],
                args=[rate, self.settings.submit_burst, 1],
            )
        except redis.RedisError as exc:
            logger.warning("rate limit check skipped, Redis unavailable: %s", exc)
            return
        if not int(allowed):
            retry = max(1, math.ceil(float(wait)))
            raise ServiceError(
                429,
                f"rate limit: {self.settings.submit_rate_per_minute:g} submissions per minute "
                f"per key (burst {self.settings.submit_burst}); retry in {retry}s",
                headers={"Retry-After": str(retry)},
            )

    def check_queue(self, queue: str) -> None:
        """Refuse new work while ``queue`` holds ``max_queue_depth`` tasks or more.

        Raises:
            ServiceError: 503 with ``Retry-After`` when the queue is over the depth.
        """
        try:
            depth = self.dispatcher.queue_depth(queue)
        except redis.RedisError as exc:
            logger.warning("queue depth check skipped, Redis unavailable: %s", exc)
            return
        if depth >= self.settings.max_queue_depth:
            retry = self.settings.retry_after_seconds
            raise ServiceError(
                503,
                f"queue {queue} is full ({depth} tasks waiting, limit "
                f"{self.settings.max_queue_depth}); retry in {retry}s",
                headers={"Retry-After": str(retry)},
            )

    def admit(self, key_id: int, queue: str) -> None:
        """Both checks: the queue first, so a refused request costs no token."""
        self.check_queue(queue)
        self.check_rate(key_id)

    def close(self) -> None:
        """Release the limiter's broker connection."""
        self.redis.close()
