"""The modular Mem4Nav agent: instruction parser, lexicon, perception, mapping and planning, control, and the
agent protocol on the synthetic city."""

from __future__ import annotations

import numpy as np
import pytest

from vlnkit.agents.base import AgentInputError, create
from vlnkit.agents.memory_support import ViewCodec, build_memory
from vlnkit.agents.modular import agent as _registers  # noqa: F401  (registers "modular")
from vlnkit.agents.modular.agent import _count_runs, build_modular_agent
from vlnkit.agents.street_control import FORWARD, LEFT, RIGHT, exit_for, rotate_towards
from vlnkit.agents.modular.language import InstructionParseError, LandmarkLexicon, SubGoal, parse_instruction
from vlnkit.agents.modular.mapping import EpisodicMap
from vlnkit.agents.modular.perception import Perception, sector_bearings, side_of
from vlnkit.memory import Mem4NavConfig, Mem4NavMemory

# -- instruction parser -------------------------------------------------------------------------------


def test_parse_touchdown_style_plain() -> None:
    text = (
        "Turn so that the red bank is on your right. Pass Oak Cuts on your left. You will pass the cafe on "
        "your right. At the next intersection, make a left. Go straight through two intersections and take a "
        "right at the next one. Follow the street and turn left at the corner. Make a right at the second "
        "traffic light. Turn left at the intersection with the yellow fire hydrant on the corner. Make a left "
        "at the end of the street. Cross one intersection. Stop when you see Elm Bread Co. on your left."
    )
    assert parse_instruction(text, strict=True) == [
        SubGoal("orient", "right", landmark="red bank"),
        SubGoal("pass", "left", landmark="oak cuts"),
        SubGoal("pass", "right", landmark="cafe"),
        SubGoal("turn", "left", "intersection", 1),
        SubGoal("turn", "right", "intersection", 3),
        SubGoal("turn", "left", "corner"),
        SubGoal("turn", "right", "traffic_light", 2),
        SubGoal("turn", "left", "corner_landmark", 1, "yellow fire hydrant"),
        SubGoal("turn", "left", "street_end"),
        SubGoal("cross", "straight", "intersection", 1),
        SubGoal("stop", "left", "landmark", 1, "elm bread co."),
    ]


def test_parse_map2seq_style_clauses() -> None:
    text = (
        "Head toward the ice cream shop, then go past Kim Books and take a right at the next intersection. "
        "Go through two intersections and pass the bench, then stop just before the mailbox."
    )
    assert parse_instruction(text, strict=True) == [
        SubGoal("orient", "ahead", landmark="ice cream shop"),
        SubGoal("pass", None, landmark="kim books"),
        SubGoal("turn", "right", "intersection", 1),
        SubGoal("cross", "straight", "intersection", 2),
        SubGoal("pass", None, landmark="bench"),
        SubGoal("stop", "ahead", "landmark", 1, "mailbox"),
    ]


def test_parse_memory_patterns() -> None:
    going_back = (
        "Orient yourself along the street. Pass the black bench on your left. Continue, then turn around at the "
        "second intersection after it. Go back past the black bench and make a right at the first intersection "
        "after it. Stop at the second pet shop on your left."
    )
    assert parse_instruction(going_back, strict=True) == [
        SubGoal("pass", "left", landmark="black bench"),
        SubGoal("turn", "around", "intersection", 2, gate="black bench"),
        SubGoal("turn", "right", "intersection", 1, gate="black bench", back=True),
        SubGoal("stop", "left", "landmark", 2, "pet shop"),
    ]
    returning = ("Pass Harbor Savings Bank on your right and turn around at the end of the street. "
                 "Go back to Harbor Savings Bank and stop.")
    assert parse_instruction(returning, strict=True) == [
        SubGoal("pass", "right", landmark="harbor savings bank"),
        SubGoal("turn", "around", "street_end", gate="harbor savings bank"),
        SubGoal("stop", None, "return_to", 1, "harbor savings bank", back=True),
    ]
    loop = (
        "When you get back to the green deli you passed, go straight through the intersection. "
        "When you are back at the bank, turn left. Stop when you are back at the bank."
    )
    assert parse_instruction(loop, strict=True) == [
        SubGoal("turn", "straight", "back_at", 1, "green deli", back=True),
        SubGoal("turn", "left", "back_at", 1, "bank", back=True),
        SubGoal("stop", None, "back_at", 1, "bank", back=True),
    ]


def test_parse_skips_unknown_sentences_unless_strict() -> None:
    text = "Dance with the pigeons. Make a left at the next intersection."
    assert parse_instruction(text) == [SubGoal("turn", "left", "intersection", 1)]
    with pytest.raises(InstructionParseError):
        parse_instruction(text, strict=True)


def test_lexicon_names_and_sign_words() -> None:
    categories = ["bank", "barber shop", "bookstore", "cafe", "shoe store"]
    examples = [("Elm Cuts", "barber shop"), ("Rosa's Barbers", "barber shop"), ("The Daily Page", "bookstore"),
                ("Kim Books", "bookstore"), ("First Elm Bank", "bank")]
    lexicon = LandmarkLexicon(categories, examples)
    assert lexicon.category("the black shoe store") == categories.index("shoe store")
    assert lexicon.category("Oak Cuts") == categories.index("barber shop")
    assert lexicon.category("The Quiet Page") == categories.index("bookstore")
    assert lexicon.category("Mia's Shoes") == categories.index("shoe store")  # unseen word sharing the name's stem
    assert lexicon.category("Something Else") is None


# -- perception ---------------------------------------------------------------------------------------

CATEGORIES = ["bank", "cafe", "tree"]


def _panorama(**cells: float) -> np.ndarray:
    """An (8, 3) panorama from ``name_sector=closeness`` keyword cells."""
    view = np.zeros((8, 3), dtype=np.float32)
    for key, value in cells.items():
        name, sector = key.rsplit("_", 1)
        view[int(sector), CATEGORIES.index(name)] = value
    return view


def test_perception_words_and_sides() -> None:
    perception = Perception(CATEGORIES)
    view = _panorama(bank_0=0.8, cafe_2=0.6, tree_5=0.3, tree_6=0.9, cafe_4=0.1)
    assert perception.describe(view) == {"ahead": ["bank"], "right": ["cafe"], "behind": [], "left": ["tree"]}
    assert perception.closeness(view, CATEGORIES.index("tree"), "left") == pytest.approx(0.9)
    assert perception.beside(view, CATEGORIES.index("cafe")) == ("right", pytest.approx(0.6))
    sightings = perception.landmarks(view)
    assert [(s.category, s.sector, s.side) for s in sightings] == [
        ("tree", 6, "left"), ("bank", 0, "ahead"), ("cafe", 2, "right"), ("tree", 5, "left"),
    ]
    assert sightings[0].distance_m == pytest.approx(3.0)


def test_perception_places_sectors_with_the_exact_heading() -> None:
    # Facing 70 degrees, the source rolled sectors to 90: sector 4 spans 200-245 degrees relative, the left.
    assert sector_bearings(8, 70.0)[4] == pytest.approx(222.5)
    perception = Perception(CATEGORIES)
    view = _panorama(bank_4=0.6)
    assert perception.describe(view)["behind"] == ["bank"]
    assert perception.describe(view, heading=70.0)["left"] == ["bank"]
    assert [side_of(b) for b in (0, 40, 180, 300)] == ["ahead", "right", "behind", "left"]
    # Facing the other way the same landmark sits four sectors round.
    turned = perception.facing(view, 0.0, 180.0)
    assert turned[0, 0] == pytest.approx(0.6)


def test_count_runs_splits_same_category_at_dips() -> None:
    assert _count_runs([0.0, 0.5, 0.7, 0.5, 0.0, 0.6, 0.0], 0.45, 0.1)[0] == 2
    assert _count_runs([0.5, 0.7, 0.55, 0.7, 0.5], 0.45, 0.1)[0] == 2   # two shops side by side
    assert _count_runs([0.5, 0.7, 0.65, 0.7], 0.45, 0.1)[0] == 1
    count, peak, last = _count_runs([0.6], 0.45, 0.1)
    assert _count_runs([0.0, 0.6], 0.45, 0.1, count, peak, last)[0] == 2  # continued one value at a time


# -- control ------------------------------------------------------------------------------------------


def test_exit_for_classifies_links_against_the_travel_heading() -> None:
    links = [0.0, 90.0, 180.0, 275.0]
    assert exit_for(links, 0.0, "straight") == 0.0
    assert exit_for(links, 0.0, "right") == 90.0
    assert exit_for(links, 0.0, "left") == 275.0
    assert exit_for(links, 0.0, "around") == 180.0
    assert exit_for([0.0, 180.0], 0.0, "left") is None


def test_rotate_towards_takes_the_shorter_way() -> None:
    links = [0.0, 90.0, 180.0, 270.0]
    assert rotate_towards(0.0, 270.0, links) == LEFT
    assert rotate_towards(0.0, 90.0, links) == RIGHT
    assert rotate_towards(0.0, 0.0, [0.0]) == FORWARD
    assert rotate_towards(0.0, 180.0, [0.0, 180.0], "velma", 5) == 4


# -- mapping and planning -----------------------------------------------------------------------------


def _graph_map() -> EpisodicMap:
    codec = ViewCodec(8, 3)
    memory = Mem4NavMemory(Mem4NavConfig(dim=codec.dim, descriptor_dim=codec.descriptor_dim, use_octree=False,
                                         use_graph=True, use_stm=False, use_ltm=False))
    return EpisodicMap(memory, codec)


def test_plan_over_a_hand_made_topology_graph() -> None:
    memory_map = _graph_map()
    # An L-shaped walk with a distinct view at every place: A(0,0) -> B(0,10) -> C(0,20) -> D(10,20), then a
    # detour D -> E(20,20) -> F(20,10) -> G(10,10) -> B closing a loop.
    places = [(0, 0), (0, 10), (0, 20), (10, 20), (20, 20), (20, 10), (10, 10), (0, 10)]
    nodes = []
    for step, (x, y) in enumerate(places):
        view = np.zeros((8, 3), dtype=np.float32)
        key = places.index((x, y))
        view[key % 8, key % 3] = 1.0
        nodes.append(memory_map.write(view, 0.0, np.array([x, y], dtype=float), step))
    assert nodes[-1] == nodes[1]          # B is recognised on the way back
    graph = memory_map.memory.graph
    assert len(graph) == 7
    # Edges were only traversed forward, yet the way back from D to A is planned (streets go both ways).
    path = memory_map.plan(nodes[3], nodes[0])
    assert [tuple(np.round(p).astype(int)) for p in path] == [(10, 20), (0, 20), (0, 10), (0, 0)]
    # From E to A the loop through G is as long as the way back through D and C: either is a shortest path.
    path = memory_map.plan(nodes[4], nodes[0])
    assert len(path) == 5 and tuple(np.round(path[-1]).astype(int)) == (0, 0)
    assert memory_map.plan(nodes[0], 99) == []


def test_recall_and_trace_use_the_enabled_parts() -> None:
    codec = ViewCodec(8, 3)
    view = _panorama(bank_2=0.7)
    # variant -> (parts that recall the place, whether those keep the step, whether a trace exists)
    expected = {"none": (set(), False, False), "stm_only": ({"stm"}, True, True),
                "octree_only": ({"octree"}, True, True), "oracle": ({"oracle"}, True, True),
                "ltm_only": ({"ltm"}, False, False), "graph_only": (set(), False, False),
                "full": ({"stm", "octree"}, True, True)}
    for variant, (sources, stepped, traced) in expected.items():
        memory = build_memory(variant, codec.dim, descriptor_dim=codec.descriptor_dim)
        memory_map = EpisodicMap(memory, codec)
        memory_map.write(view, 0.0, np.array([5.0, 5.0]), 3)
        memory_map.write(_panorama(cafe_1=0.5), 0.0, np.array([5.0, 15.0]), 4)
        here = memory_map.recall_here(view, 0.0, np.array([5.0, 5.0]), before=9)
        assert {m.source for m in here} == sources, variant
        if sources:
            remembered = here[0]
            assert remembered.step == (3 if stepped else None), variant
            # The egocentric view at that time is decoded back: the bank on the right.
            assert remembered.view[2, 0] == pytest.approx(0.7)
        assert [m.step for m in memory_map.trace()] == ([3, 4] if traced else []), variant
        assert memory_map.holds(3) == (min(sources, key=["oracle", "stm", "octree"].index) if traced else None)
        assert memory_map.has_graph == (variant in ("graph_only", "full"))


def test_graph_localisation_accepts_a_neighbouring_node() -> None:
    memory_map = _graph_map()
    views = {}
    for step, y in enumerate((0.0, 10.0, 20.0, 30.0)):
        view = np.zeros((8, 3), dtype=np.float32)
        view[step, step % 3] = 1.0
        views[y] = view
        memory_map.write(view, 0.0, np.array([0.0, y]), step)
    a, b, c, d = (memory_map.locate(views[y], 0.0, np.array([0.0, y])) for y in (0.0, 10.0, 20.0, 30.0))
    assert len({a, b, c, d}) == 4
    assert memory_map.near_node(b, b) and not memory_map.near_node(c, b)     # exact: only the node itself
    assert memory_map.near_node(c, b, hops=1) and memory_map.near_node(a, b, hops=1)   # one hop either way
    assert not memory_map.near_node(d, b, hops=1)                                    # two hops away
    # A node made at B's place from another view (beyond delta) is B's place: within place_radius of it.
    other = np.zeros((8, 3), dtype=np.float32)
    other[7, 2] = 1.0
    b2 = memory_map.write(other, 0.0, np.array([1.0, 10.0]), 4)
    assert b2 not in (a, b, c, d) and memory_map.near_node(b2, b)


def test_graph_keeps_the_view_fallback_and_accepts_the_next_place() -> None:
    # The agent's own question "am I back where the bank was passed?" on a graph-only memory: the graph
    # recognises the neighbouring place where one is allowed (window 1); elsewhere it cannot rule the place
    # out, so the agent judges from its view (the answer is None, i.e. fallback) instead of saying "no".
    from vlnkit.agents.modular.agent import _Pass

    agent = build_modular_agent({"categories": CATEGORIES, "memory": "graph_only"})
    agent.reset({"instruction": "Stop when you get back to the bank.", "heading": np.zeros(1, np.float32),
                 "position": np.zeros(2, np.float32), "links": np.array([0.0, 180.0, -1.0, -1.0], np.float32),
                 "panorama": _panorama()}, None, 0)
    views = [_panorama(**{f"cafe_{i}": 0.5}) for i in range(4)]
    nodes = [agent.map.write(v, 0.0, np.array([0.0, 10.0 * i]), i) for i, v in enumerate(views)]
    anchor = _Pass(SubGoal("pass", "right", landmark="bank"), 0, best=0.8, best_step=1, node=nodes[1], side="right")
    agent.moves = 9

    def at(i: int, window: int) -> tuple[bool | None, str]:
        return agent._recalls(agent.map, anchor, views[i], 0.0, np.array([0.0, 10.0 * i]), window)

    assert at(1, 0) == (True, "graph")
    assert at(2, 1) == (True, "graph")
    assert at(2, 0) == (None, "fallback") and at(3, 1) == (None, "fallback")


# -- the agent ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def city_env():
    from vlnkit.envs.street.env import StreetEnv
    from vlnkit.envs.synth import default_city

    return StreetEnv(task="touchdown", data_dir=default_city(), split="dev", episode_kinds="all", panorama="auto")


def _rollout(env, agent, index: int) -> tuple[float, int]:
    obs, _ = env.reset(options={"episode_index": index})
    agent.reset(obs, None, 0)
    done, reward, steps = False, 0.0, 0
    while not done:
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs, None))
        done = terminated or truncated
        steps += 1
    return reward, steps


@pytest.mark.parametrize("variant", ["full", "none", "stm_only", "graph_only", "ltm_only", "oracle"])
def test_agent_runs_on_observations_alone(city_env, variant: str) -> None:
    agent = create("modular", {"memory": variant, "memory_overrides": {"ltm": {"depth": 2}}},
                   num_actions=int(city_env.action_space.n))
    assert agent.uses_info is False
    for index in range(3):
        _, steps = _rollout(city_env, agent, index)
        assert 1 <= steps <= city_env.max_steps


def test_agent_refuses_observations_without_its_panorama_features() -> None:
    agent = build_modular_agent({"categories": CATEGORIES, "memory": "none"})
    obs = {"instruction": "Make a left at the next intersection. Stop after a few steps.",
           "heading": np.array([0.0], dtype=np.float32), "position": np.zeros(2, dtype=np.float32),
           "links": np.array([0.0, 180.0, -1.0], dtype=np.float32)}
    with pytest.raises(AgentInputError, match=r"agent=modular needs observation 'panorama' as \(8, 3\) features.*"
                                              r"got no panorama.*task.panorama=features"):
        agent.reset(obs, None, 0)
    with pytest.raises(AgentInputError, match=r"got a panorama of shape \(8, 5\)"):
        agent.reset({**obs, "panorama": np.zeros((8, 5), dtype=np.float32)}, None, 0)
    obs["panorama"] = _panorama()
    agent.reset(obs, None, 0)
    assert agent.act(obs) == FORWARD


def test_memory_is_what_counts_the_second_landmark() -> None:
    # A street walked north; pet shops on the left at the 2nd and 6th place. "Stop at the second pet shop on
    # your left" after a turn at place 4: only the memory knows one was passed before the last sub-goal.
    categories = ["pet shop", "tree"]
    shop = np.zeros((8, 2), dtype=np.float32)
    shop[6, 0] = 0.7
    empty = np.zeros((8, 2), dtype=np.float32)
    views = [empty, shop, empty, empty, empty, empty, shop, empty]
    junction = np.array([0.0, 90.0, 180.0, 270.0], dtype=np.float32)
    street = np.array([0.0, 180.0, -1.0, -1.0], dtype=np.float32)
    text = "Go straight through one intersection. Stop at the second pet shop on your left."
    stopped_at = {}
    for variant in ("full", "none"):
        agent = build_modular_agent({"categories": categories, "memory": variant,
                                     "memory_overrides": {"ltm": {"depth": 2}}})
        first = {"instruction": text, "heading": np.array([0.0], dtype=np.float32),
                 "position": np.zeros(2, dtype=np.float32), "links": street, "panorama": views[0]}
        agent.reset(first, None, 0)
        for place, view in enumerate(views):
            obs = {"instruction": text, "heading": np.array([0.0], dtype=np.float32),
                   "position": np.array([0.0, 10.0 * place], dtype=np.float32),
                   "links": junction if place == 4 else street, "panorama": view}
            if agent.act(obs) == 0:
                stopped_at[variant] = place
                break
    assert stopped_at.get("full") == 6
    assert "none" not in stopped_at      # without memory it has seen only one since the crossing
