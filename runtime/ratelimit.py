"""Per-key rate limits shared by every API process, decided inside Redis.

The algorithm is GCRA (the generic cell rate algorithm): a token bucket
that stores one number per key, the bucket's theoretical arrival time (TAT),
instead of a token count and a refill timestamp. A hit costing `cost` tokens
is allowed when `TAT + cost/rate - burst/rate <= now`, and then moves TAT
forward by `cost/rate`. The bucket is full again when TAT is in the past.

A script of our own rather than a library: the decision, the numbers the
headers report and the state update must come from one atomic step on one
clock, for a cost of any size. The libraries looked at (limits,
pyrate-limiter, throttled-py, redis-rate-limiters) take the time from the
client, or need a second round trip for remaining/reset, or pace callers
by sleeping instead of answering. The script reads Redis's own clock
(`TIME`), so API processes whose clocks disagree still share one bucket.
Scripts may call `TIME` and then write on Redis >= 5 (effects replication,
the only mode since 7); on 3.2-4.x the script would first need
`redis.replicate_commands()`. We run 7.x.

The script is registered once per limiter; redis-py sends EVALSHA and, after
a NOSCRIPT (a restarted or failed-over Redis), loads the script again.
Idle keys expire exactly when their bucket would be full, so a missing key
and a full bucket mean the same thing.

A limiter built with `lease_s` (the API's, `api.rate_lease_s`) spares a
busy process most of those round trips: with a request's own tokens it
takes, in the same atomic step, as many more as the process spent on that
key in its last `lease_s` (only out of the bucket's upper half, so the
tokens one process holds never starve another's requests), spends them
locally for at most `lease_s`, and gives back what it did not spend with
its next call. No process admits a request its tokens were not taken for,
so the fleet never admits more than the bucket.

Per request the API calls `decide(limiter, key_id, rate, burst, cost,
settings.api.redis_failure_policy)`, cost being the number of items:
None means Redis is down and the policy is "open" (serve, no RateLimit
headers); otherwise `headers(decision)` go on the response, a 429 when not
`allowed`. A cost above the burst passes only from a full bucket and then
holds the key back until it is paid for.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Final

import msgspec
import redis.exceptions
import structlog
from prometheus_client import Counter

if TYPE_CHECKING:
    import redis.asyncio

log = structlog.get_logger(__name__)

# Every time the "open" policy lets a request through unchecked.
REDIS_FALLBACKS: Final = Counter(
    "utterstream_ratelimit_redis_fallbacks",
    "Requests let through without a rate-limit decision because Redis was unavailable",
)

# KEYS[1]: the bucket's TAT, microseconds on Redis's clock.
# ARGV: emission interval (microseconds per token), burst, cost, extra:
# tokens the calling process would like to take ahead (a lease), and refund:
# tokens of its lapsed lease it did not spend, given back first.
# Returns {allowed, remaining, reset_after_us, retry_after_us, leased}, all
# integers because Redis truncates Lua numbers in replies.
_GCRA_LUA: Final = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local extra = tonumber(ARGV[4])
local refund = tonumber(ARGV[5])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
-- Given back, but never past a full bucket.
tat = math.max(tat - refund * interval, now)
-- How far TAT may run ahead of now: the whole bucket.
local tolerance = burst * interval

-- Whole tokens available when TAT is `t`. The epsilon keeps float noise in
-- (n * interval) / interval from costing a token.
local function tokens(t)
  return math.max(0, math.floor((now - (t - tolerance)) / interval + 1e-6))
end

local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance
-- A cost above the whole bucket (a large batch) is taken only from a full
-- bucket, and leaves the key in debt until its tokens are paid for: the
-- long-run rate still holds, and no request size is impossible.
if cost > burst then allow_at = tat end
if allow_at > now then
  if refund > 0 then
    redis.call('SET', KEYS[1], tat, 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
  return {0, tokens(tat), math.ceil(tat - now), math.ceil(allow_at - now), 0}
end
-- A lease comes only out of the upper half of the bucket: tokens one
-- process holds never leave another's request without any.
local leased = 0
if extra > 0 and cost <= burst then
  leased = math.max(0, math.min(extra, tokens(new_tat) - math.ceil(burst / 2)))
  new_tat = new_tat + leased * interval
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, tokens(new_tat), math.ceil(new_tat - now), 0, leased}
"""

_US: Final = 1_000_000
# Keys with a lease one process tracks before it drops the lapsed ones.
_MAX_LEASES: Final = 10_000
_POLICIES: Final = ("open", "closed")
# Failures that mean "Redis cannot answer now". Anything else (a bad script,
# a wrong argument) is a bug and must surface as one.
_UNAVAILABLE: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    # The burst (bucket size): what RateLimit-Limit reports.
    limit: int
    # Whole tokens left after this hit (a denied hit takes none).
    remaining: int
    # Seconds until the bucket is full again: RateLimit-Reset.
    reset_after_s: float
    # 0 when allowed; else seconds until the hit would pass.
    retry_after_s: float


class RateLimiterUnavailable(Exception):
    """Redis could not be reached or did not answer in time."""


class RedisRateLimiter:
    """GCRA buckets in Redis, one key per bucket under `prefix`.

    The client is the caller's, with its timeouts and retries: build it with
    a short `socket_timeout` and few retries, because every request waits for
    this call and redis-py's default retries add up to seconds when Redis is
    down.
    """

    def __init__(
        self, redis: redis.asyncio.Redis, prefix: str = "rl:", lease_s: float = 0.0
    ) -> None:
        self._script = redis.register_script(_GCRA_LUA)
        self._prefix = prefix
        # Log an outage once when it starts and once when it ends, not per request.
        self._failing = False
        self._lease_s = lease_s
        self._leases: dict[str, _Lease] = {}

    async def hit(self, key: str, rate: float, burst: int, cost: int = 1) -> RateDecision:
        """Take `cost` tokens from `key`'s bucket (refilled at `rate` per
        second, holding at most `burst`) if they are all there; never part."""
        _check(rate, burst, cost)
        if not self._lease_s:
            return _decision(burst, await self._run(key, (repr(_US / rate), burst, cost, 0, 0)))
        now = time.monotonic()
        lease = self._lease(key, now)
        lease.count(cost, now, self._lease_s)
        if lease.take(cost, now):
            return RateDecision(True, burst, lease.remaining + lease.tokens, lease.reset_s, 0.0)
        # One request per key at a time asks for a lease; the others meanwhile
        # ask for their own cost only, so no process takes twice what it uses.
        asking = lease.demand > 0 and not lease.asking
        lease.asking |= asking
        refund = lease.lapsed(now)
        try:
            extra = lease.demand if asking else 0
            reply = await self._run(key, (repr(_US / rate), burst, cost, extra, refund))
        finally:
            if asking:
                lease.asking = False
        if reply[4]:
            lease.hold(reply, time.monotonic() + self._lease_s)
        return _decision(burst, reply)

    def _lease(self, key: str, now: float) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) >= _MAX_LEASES:
                self._leases = {k: v for k, v in self._leases.items() if now < v.until}
            lease = self._leases[key] = _Lease()
        return lease

    async def _run(self, key: str, args: tuple[str, int, int, int, int]) -> list[int]:
        try:
            reply: list[int] = await self._script(keys=[self._prefix + key], args=args)
        except _UNAVAILABLE as exc:
            if not self._failing:
                log.error("ratelimit.redis_unavailable", error=str(exc), kind=type(exc).__name__)
                self._failing = True
            raise RateLimiterUnavailable(str(exc)) from exc
        if self._failing:
            log.info("ratelimit.redis_recovered")
            self._failing = False
        return reply


class _Lease:
    """Tokens this process took from a key's bucket ahead of its requests,
    spent here without asking Redis until they run out or the lease ends.
    A lease is sized by what the process spent in its last period, so it
    takes about what it will use; the tokens it left unspent go back to the
    bucket with its next call to Redis. Every leased token was taken from
    the shared bucket, at most one lease period before a request spends it."""

    __slots__ = ("asking", "demand", "period", "remaining", "reset_s", "spent", "tokens", "until")

    def __init__(self) -> None:
        self.tokens, self.until = 0, 0.0
        # The bucket as Redis reported it when the lease was taken.
        self.remaining, self.reset_s = 0, 0.0
        self.period, self.spent, self.demand = 0.0, 0, 0
        self.asking = False

    def count(self, cost: int, now: float, lease_s: float) -> None:
        if now - self.period >= lease_s:
            self.demand = self.spent if now - self.period < 2 * lease_s else 0
            self.period, self.spent = now, 0
        self.spent += cost

    def take(self, cost: int, now: float) -> bool:
        if now >= self.until or self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def lapsed(self, now: float) -> int:
        """The tokens of a lease that ended unspent, handed over to be given back."""
        if now < self.until:
            return 0
        unspent, self.tokens = self.tokens, 0
        return unspent

    def hold(self, reply: list[int], until: float) -> None:
        # Tokens still held were taken from the bucket too: they join the new
        # lease rather than being dropped (a lapsed lease was emptied before the call).
        self.tokens, self.until = self.tokens + reply[4], until
        self.remaining, self.reset_s = reply[1], reply[2] / _US


def _decision(burst: int, reply: list[int]) -> RateDecision:
    allowed, remaining, reset_after_us, retry_after_us, leased = reply
    return RateDecision(
        allowed=bool(allowed),
        limit=burst,
        # Tokens leased to this process are still the key's to spend.
        remaining=remaining + leased,
        reset_after_s=reset_after_us / _US,
        retry_after_s=retry_after_us / _US,
    )


async def decide(
    limiter: RedisRateLimiter, key: str, rate: float, burst: int, cost: int, policy: str
) -> RateDecision | None:
    """`limiter.hit`, with `ApiSettings.redis_failure_policy` applied when
    Redis is unavailable.

    "open": returns None, meaning "let the request through, no decision and
    no RateLimit headers", and counts it in REDIS_FALLBACKS (the limiter
    logs the outage once, when it starts, and again when it ends).
    "closed": re-raises RateLimiterUnavailable, which the API maps to 503
    with Retry-After.
    """
    if policy not in _POLICIES:
        # Checked on every call so a bad setting shows before the first outage.
        raise ValueError(f"redis_failure_policy must be one of {_POLICIES}, not {policy!r}")
    try:
        return await limiter.hit(key, rate, burst, cost)
    except RateLimiterUnavailable:
        if policy == "closed":
            raise
        REDIS_FALLBACKS.inc()
        return None


def headers(decision: RateDecision) -> dict[str, str]:
    """RateLimit-Limit/-Remaining/-Reset (the separate fields of the IETF
    RateLimit header draft), plus Retry-After on a denial. Seconds are rounded up so a client that waits them is not early."""
    fields = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_after_s)),
    }
    if not decision.allowed:
        fields["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
    return fields


def _check(rate: float, burst: int, cost: int) -> None:
    # Bad limits would otherwise become a division by zero or a bucket that
    # never fills; they are configuration bugs, not denials.
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number, not {rate!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, not {burst!r}")
    if cost < 1:
        raise ValueError(f"cost must be at least 1, not {cost!r}")
