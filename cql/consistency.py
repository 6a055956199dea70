"""The consistency level of each kind of statement, chosen once here.

With replication 3 per data centre (`NetworkTopologyStrategy:dc=3`), every
level below needs 2 of a partition's 3 local replicas: one node of three may
be down and nothing changes for clients; with two down, statements fail with
Unavailable (quorum lost), which the API answers with 503 and Retry-After.
With replication 1 (a single local node) each "quorum" is that one replica,
so the same levels work unchanged.

| statement kind | level | why |
|---|---|---|
| plain writes (utterance batch, feed entry, listings, served tables) | LOCAL_QUORUM | acknowledged = on a majority, so it survives the loss of any one replica |
| served reads (API GETs) | LOCAL_QUORUM | read and write quorums overlap (2 + 2 > 3): a 202's utterance is readable at once |
| change-feed reads (dataflows) | LOCAL_QUORUM | a sweep sees every acknowledged feed entry, so none is skipped while a replica is behind |
| LWT Paxos phase (idempotency keys, claims, learners) | LOCAL_SERIAL | linearizable within the data centre, without a round trip to remote ones |
| LWT commit | LOCAL_QUORUM | the commit of a CAS is a plain write |
| SERIAL read settling a CAS timeout | LOCAL_SERIAL | completes any Paxos round in progress, so it reads the outcome the LWT will have |

Nothing reads or writes at ONE: with hinted handoff alone, a 202 could be
lost with its one replica. Nothing uses ALL or EACH_QUORUM: one slow node or
remote data centre would stop every write.
"""

from __future__ import annotations

from cassandra import ConsistencyLevel

# Plain writes, served reads, change-feed reads and the commit of an LWT.
QUORUM = ConsistencyLevel.LOCAL_QUORUM
# The Paxos phase of an LWT, and the read that settles a CAS timeout.
SERIAL = ConsistencyLevel.LOCAL_SERIAL
