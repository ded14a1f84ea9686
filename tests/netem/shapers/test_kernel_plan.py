"""KernelShaper logic without root: a fake IPRoute records the netlink messages it is handed.

What is checked: the qdisc tree created per direction, that changes are 'change' requests
touching only the qdiscs whose parameters changed, one batch per namespace, the refusal on a
kernel without netem (nothing sent), the netem parameters on a kernel with netem, error
reporting and close().
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELQDISC, RTM_NEWQDISC, RTM_NEWTCLASS

from netem.errors import LinkStateError, NetemError, UnsupportedError
from netem.linkstate import GilbertElliott, LinkState
from netem.probe import Capabilities
from netem.shapers import KernelShaper
from netem.shapers.tc_requests import U32_MAX, ratio_to_u32, us_to_ticks

HERE = Capabilities.assume({"htb", "tbf", "pfifo", "ingress", "clsact"}, {"ifb"})
LAB = Capabilities.assume({"htb", "tbf", "pfifo", "netem", "fq"})


class FakeIPRoute:
    """Records every message; `fail` maps (msg_type, ifindex) to an errno to answer."""

    def __init__(self, netns: str | None, links: dict[str, int], log: list[dict[str, Any]],
                 fail: dict[tuple[int, int], int]) -> None:
        self.netns = netns
        self.links = links
        self.log = log
        self.fail = fail
        self.batches: list[int] = []
        self.closed = False
        self._seq = 0

    def link_lookup(self, **spec: Any) -> list[int]:
        index = self.links.get(spec["ifname"])
        return [] if index is None else [index]

    def nlm_request_batch(self, msgs, noraise=False):
        self.batches.append(len(msgs))
        acks = []
        for msg in msgs:
            self._seq += 1
            msg["header"]["sequence_number"] = self._seq
            msg.encode()  # must be encodable as sent
            entry = {
                "netns": self.netns,
                "type": msg["header"]["type"],
                "flags": msg["header"]["flags"],
                "index": msg["index"],
                "handle": msg["handle"],
                "parent": msg["parent"],
                "kind": msg.get_attr("TCA_KIND"),
                "options": msg.get_attr("TCA_OPTIONS"),
            }
            self.log.append(entry)
            code = self.fail.get((entry["type"], entry["index"]))
            if code is None:
                acks.append({"header": {"sequence_number": self._seq, "error": None},
                             "error": 0})
            elif not noraise:
                raise NetlinkError(code)
        return acks

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake():
    state: dict[str, Any] = {"log": [], "fail": {}, "iprs": {}}
    links = {None: {"veth-a": 5, "veth-b": 6}, "ns1": {"eth0": 2}, "ns2": {"eth0": 2}}

    def factory(netns):
        ipr = FakeIPRoute(netns, links.get(netns, {}), state["log"], state["fail"])
        state["iprs"][netns] = ipr
        return ipr

    state["factory"] = factory
    return state


def _shaper(fake, caps=HERE, **kw) -> KernelShaper:
    return KernelShaper(caps, ipr_factory=fake["factory"], **kw)


def test_add_direction_creates_htb_class_and_pfifo_child(fake):
    with _shaper(fake) as shaper:
        shaper.add_direction("gs/down", "veth-a", None, LinkState(20_000_000,
                                                                 queue_limit_packets=64))
        log = fake["log"]
        assert [(e["type"], e["kind"], hex(e["handle"]), hex(e["parent"])) for e in log] == [
            (RTM_NEWQDISC, "htb", "0x10000", "0xffffffff"),
            (RTM_NEWTCLASS, "htb", "0x10001", "0x10000"),
            (RTM_NEWQDISC, "pfifo", "0x100000", "0x10001"),
        ]
        assert all(e["flags"] & NLM_F_CREATE and e["flags"] & NLM_F_EXCL for e in log)
        assert log[1]["options"].get_attr("TCA_HTB_PARMS")["rate_rate"] == 2_500_000
        assert log[2]["options"]["limit"] == 64
        assert fake["iprs"][None].batches == [3]  # one netlink batch
        assert shaper.current("gs/down").rate_bps == 20_000_000


def test_changes_are_in_place_and_only_what_changed(fake):
    with _shaper(fake) as shaper:
        shaper.add_direction("a", "veth-a", None, LinkState(20_000_000))
        fake["log"].clear()
        shaper.apply("a", LinkState(5_000_000))  # rate only: the class, nothing else
        assert [(e["type"], e["kind"]) for e in fake["log"]] == [(RTM_NEWTCLASS, "htb")]
        assert fake["log"][0]["flags"] & NLM_F_REPLACE
        assert not fake["log"][0]["flags"] & (NLM_F_CREATE | NLM_F_EXCL)
        fake["log"].clear()
        shaper.apply("a", LinkState(5_000_000, queue_limit_packets=10))  # queue only
        assert [(e["kind"], e["options"]["limit"]) for e in fake["log"]] == [("pfifo", 10)]
        fake["log"].clear()
        shaper.apply("a", LinkState(5_000_000, queue_limit_packets=10, name="renamed"))
        assert fake["log"] == []  # nothing the kernel holds changed
        assert shaper.current("a").name == "renamed"


def test_down_link_parks_rate_and_drops_in_child(fake):
    with _shaper(fake, rate_qdisc="tbf") as shaper:
        shaper.add_direction("a", "veth-a", None, LinkState(20_000_000, queue_limit_packets=50))
        fake["log"].clear()
        shaper.apply("a", LinkState(0, queue_limit_packets=50))
        kinds = {e["kind"]: e for e in fake["log"]}
        assert set(kinds) == {"tbf", "pfifo"}
        assert kinds["pfifo"]["options"]["limit"] == 0
        # tbf hands its limit to a pfifo child (fifo_set_limit): it must say 0 as well
        assert kinds["tbf"]["options"].get_attr("TCA_TBF_PARMS")["limit"] == 0
        fake["log"].clear()
        shaper.apply("a", LinkState(10_000_000, queue_limit_packets=50))
        kinds = {e["kind"]: e for e in fake["log"]}
        assert kinds["pfifo"]["options"]["limit"] == 50
        assert kinds["tbf"]["options"].get_attr("TCA_TBF_PARMS")["limit"] == 50


def test_one_batch_per_namespace(fake):
    with _shaper(fake) as shaper:
        shaper.add_direction("a", "eth0", "ns1", LinkState(10_000_000))
        shaper.add_direction("b", "eth0", "ns2", LinkState(10_000_000))
        shaper.add_direction("c", "veth-a", None, LinkState(10_000_000))
        shaper.add_direction("d", "veth-b", None, LinkState(10_000_000))
        shaper.apply_many({k: LinkState(3_000_000) for k in "abcd"})
        assert fake["iprs"][None].batches[-1] == 2
        assert fake["iprs"]["ns1"].batches[-1] == 1 and fake["iprs"]["ns2"].batches[-1] == 1


def test_without_netem_delay_is_refused_precisely_and_nothing_sent(fake):
    with _shaper(fake) as shaper:
        shaper.add_direction("s3-gs1/down", "veth-a", None, LinkState(20_000_000, name="s3-gs1"))
        shaper.add_direction("ok", "veth-b", None, LinkState(20_000_000))
        before = len(fake["log"])
        with pytest.raises(UnsupportedError) as err:
            shaper.apply_many({  # one of two needs netem: the whole batch is refused unsent
                "ok": LinkState(5_000_000),
                "s3-gs1/down": LinkState(5_000_000, delay_us=20_000, loss_ratio=0.01,
                                         name="s3-gs1"),
            })
        msg = str(err.value)
        assert "link 's3-gs1', direction 's3-gs1/down'" in msg
        assert "delay_us=20000, loss_ratio=0.01 needs the netem qdisc" in msg
        assert "kernel lacks (assumed absent)" in msg and "UserspaceShaper" in msg
        assert len(fake["log"]) == before
        assert shaper.current("s3-gs1/down").rate_bps == 20_000_000
        assert shaper.current("ok").rate_bps == 20_000_000
        with pytest.raises(UnsupportedError, match=r"jitter_us=5 needs the netem qdisc"):
            shaper.add_direction("x", "eth0", "ns1", LinkState(1_000_000, jitter_us=5))


def test_netem_parameters_sent_on_a_kernel_with_netem(fake):
    ge = GilbertElliott(p_enter_bad=0.02, p_exit_bad=0.25, loss_in_bad=0.5)
    with _shaper(fake, caps=LAB) as shaper:
        assert shaper.child_kind == "netem"
        shaper.add_direction("a", "veth-a", None, LinkState(50_000_000, delay_us=20_000,
                                                            jitter_us=100, loss_ratio=0.01))
        netem = fake["log"][-1]
        assert (netem["kind"], hex(netem["parent"])) == ("netem", "0x10001")
        opts = netem["options"]
        assert opts["delay"] == us_to_ticks(20_000) and opts["jitter"] == us_to_ticks(173)
        assert opts["loss"] == ratio_to_u32(0.01) and opts["limit"] == 1000
        fake["log"].clear()
        shaper.apply("a", LinkState(50_000_000, delay_us=30_000, burst_loss=ge))
        assert [e["kind"] for e in fake["log"]] == ["netem"]  # rate unchanged: netem only
        loss = fake["log"][0]["options"].get_attr("TCA_NETEM_LOSS").get_attr("NETEM_LOSS_GE")
        assert (loss["p"], loss["r"], loss["h"], loss["k1"]) == (
            ratio_to_u32(0.02), ratio_to_u32(0.25), ratio_to_u32(0.5), 0)
        fake["log"].clear()
        shaper.apply("a", LinkState(0, delay_us=30_000))  # down: parked rate, netem drops all
        netem = [e for e in fake["log"] if e["kind"] == "netem"][0]
        assert netem["options"]["loss"] == U32_MAX
        assert netem["options"].get_attr("TCA_NETEM_LOSS") is None


def test_kernel_refusal_names_direction_and_errno(fake):
    with _shaper(fake) as shaper:
        shaper.add_direction("a", "veth-a", None, LinkState(20_000_000))
        shaper.add_direction("b", "veth-b", None, LinkState(20_000_000))
        fake["fail"][(RTM_NEWTCLASS, 6)] = errno.ENODEV
        with pytest.raises(NetemError, match=r"b: change class htb 1:1 .* ENODEV"):
            shaper.apply_many({"a": LinkState(1_000_000), "b": LinkState(2_000_000)})
        assert shaper.current("a").rate_bps == 1_000_000  # applied
        assert shaper.current("b").rate_bps == 20_000_000  # kernel still holds the old rate


def test_existing_root_qdisc_is_not_taken_over(fake):
    fake["fail"][(RTM_NEWQDISC, 5)] = errno.EEXIST
    with _shaper(fake) as shaper:
        with pytest.raises(NetemError, match="already has a root qdisc"):
            shaper.add_direction("a", "veth-a", None, LinkState(1_000_000))
        assert shaper.directions() == []


def test_input_errors(fake):
    with _shaper(fake) as shaper:
        with pytest.raises(NetemError, match="interface 'nope' not found in the host namespace"):
            shaper.add_direction("a", "nope", None, LinkState(1_000_000))
        with pytest.raises(LinkStateError, match=r"rate_bps=500, expected 0 or >= 1000"):
            shaper.add_direction("a", "veth-a", None, LinkState(500))
        shaper.add_direction("a", "veth-a", None, LinkState(1_000_000))
        with pytest.raises(NetemError, match="already shapes direction 'a'"):
            shaper.add_direction("b", "veth-a", None, LinkState(1_000_000))
        with pytest.raises(NetemError, match=r"unknown direction 'z'; known: a"):
            shaper.apply("z", LinkState(1_000_000))
    with pytest.raises(UnsupportedError, match="choose: htb, tbf"):
        _shaper(fake, rate_qdisc="hbt")
    with pytest.raises(UnsupportedError, match="rate qdisc 'tbf' is not available"):
        _shaper(fake, caps=Capabilities.assume({"htb", "pfifo"}), rate_qdisc="tbf")


def test_close_deletes_roots_and_closes_sockets_once(fake):
    shaper = _shaper(fake)
    shaper.add_direction("a", "eth0", "ns1", LinkState(1_000_000))
    shaper.add_direction("b", "veth-a", None, LinkState(1_000_000))
    fake["log"].clear()
    shaper.close()
    deletes = [(e["netns"], e["type"], e["index"], hex(e["parent"])) for e in fake["log"]]
    assert sorted(deletes, key=str) == sorted([("ns1", RTM_DELQDISC, 2, "0xffffffff"),
                                               (None, RTM_DELQDISC, 5, "0xffffffff")], key=str)
    assert all(ipr.closed for ipr in fake["iprs"].values())
    shaper.close()  # idempotent
    assert len(fake["log"]) == 2
    with pytest.raises(NetemError, match="closed"):
        shaper.apply("a", LinkState(1_000_000))
