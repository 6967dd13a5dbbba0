"""Creation's rule 2 (copycat.host.Creation), over a fake membership: a node starts a
group for an id only when it holds the directory of every live node and no node saw the
id hosted. A group of one replica behind a partition is the case: its host is live to
gossip but out of this node's reach, and a second group under its id would split it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import copycat.host._creation as creation_module
from copycat._ids import DataStructureId
from copycat.errors import ClusterUnreachableError
from copycat.host import Creation, CreationConfig, Method, Tombstones
from copycat.host._control import encode_lookup

from .test_repair_rules import Gossip, repair_of

if TYPE_CHECKING:
    from pathlib import Path

    from copycat.membership import View

    from .conftest import Cluster

pytestmark = pytest.mark.timeout(60)


class Directory:
    """What this node's membership says: a view, each peer's directory versions (held,
    advertised; None: not held at all), and the ids any directory ever listed."""

    def __init__(self, gossip: Gossip, versions: dict[int, tuple[int, int] | None]) -> None:
        self.gossip = gossip
        self.versions = versions
        self.listed: set[str] = set()

    def view(self) -> View:
        return self.gossip.view(1)

    def peer_directory_version(self, node_id: int) -> tuple[int, int] | None:
        return self.versions.get(node_id)

    def locate(self, data_structure_id: str) -> tuple[object, ...]:
        return ()  # no live node's directory lists a replica of it

    def ever_listed(self, data_structure_id: str) -> bool:
        return data_structure_id in self.listed


async def creation_on(
    cluster: Cluster, tmp_path: Path, directory: Directory, asked: list[int]
) -> Creation:
    """Node 1's creation; every lookup is answered "not hosted here, never listed", and
    every creation asked of another node is recorded in `asked` as a negative id."""
    await cluster.add(1)

    async def call(node_id: int, method: str, body: bytes) -> bytes:
        if method == Method.CREATE_GROUP:
            asked.append(-node_id)
            return b""
        assert method == Method.LOOKUP, method
        asked.append(node_id)
        return encode_lookup(False, directory.gossip.live)

    return Creation(
        CreationConfig(
            node_id=1, replicas=1, proposal_timeout_s=1.0, tick_interval_s=0.02, peers_to_contact=()
        ),
        cluster.hosts[1],
        repair_of(cluster, 1, directory.gossip, []),
        Tombstones(tmp_path / "tombstones"),
        call=call,
        membership=directory,  # type: ignore[arg-type]
        publish=lambda gid: None,
        leaving=lambda: False,
    )


@pytest.fixture(autouse=True)
def short_directory_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(creation_module, "DIRECTORY_WAIT_S", 0.3)


@pytest.mark.asyncio
async def test_no_group_while_a_live_nodes_directory_is_missing(
    cluster: Cluster, tmp_path: Path
) -> None:
    # init: nodes 1-5 live; this node holds the directories of 2, 3 and 4 (a majority
    # with itself), but not that of node 5, which may host the id
    directory = Directory(Gossip({1, 2, 3, 4, 5}), {2: (3, 3), 3: (3, 3), 4: (3, 3), 5: None})
    asked: list[int] = []
    creation = await creation_on(cluster, tmp_path, directory, asked)
    ds = DataStructureId.new()

    # act / check: refused, naming the node, and nothing was created
    with pytest.raises(ClusterUnreachableError, match="live nodes 5"):
        await creation.find_or_start(ds)
    assert ds.group_id not in cluster.hosts[1].groups

    assert not [n for n in asked if n < 0]

    # and once node 5's directory is held (it lists nothing), the id is created
    directory.versions[5] = (3, 3)
    (creator,) = await creation.find_or_start(ds)
    assert ds.group_id in cluster.hosts[1].groups if creator == 1 else -creator in asked


@pytest.mark.asyncio
async def test_no_group_for_an_id_a_directory_listed_whose_hosts_are_out_of_sight(
    cluster: Cluster, tmp_path: Path
) -> None:
    # init: every directory is held and no live node hosts the id, which a directory
    # listed earlier (its one replica is now behind a partition)
    directory = Directory(Gossip({1, 2, 3}), {2: (3, 3), 3: (3, 3)})
    asked: list[int] = []
    creation = await creation_on(cluster, tmp_path, directory, asked)
    ds = DataStructureId.new()
    directory.listed.add(str(ds))

    # act / check: every live node was asked, and still nothing is created
    with pytest.raises(ClusterUnreachableError, match="saw it hosted"):
        await creation.find_or_start(ds)
    assert sorted(asked) == [2, 3]
    assert ds.group_id not in cluster.hosts[1].groups
