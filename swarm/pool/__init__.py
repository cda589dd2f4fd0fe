"""Runtime workers on the broker: `swarm worker --pool NAME` serves turns, and a simulation on
`mqtt://host:port/NAME` (`PoolModel`) spreads its turns over the pool's live workers."""

from swarm.pool.model import PoolModel
from swarm.pool.protocol import owner, split_pool_url
from swarm.pool.worker import PoolWorker

__all__ = ["PoolModel", "PoolWorker", "owner", "split_pool_url"]
