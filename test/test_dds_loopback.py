"""DDS stays on this machine: every UDP socket of the test process and of a node
process is bound to 127.0.0.1 while they talk (the profile in config/ and
`source scripts/ros_env.sh --isolated` are what keeps it so)."""
import os
import subprocess

import pytest

from conftest import make_image_msg

pytestmark = pytest.mark.ros


def udp_addresses(pid: int) -> list[str]:
    listing = subprocess.run(["ss", "-u", "-a", "-n", "-p"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in listing.splitlines() if f"pid={pid}," in line]


def test_every_dds_socket_is_on_loopback(lisa_io):
    io = lisa_io()
    io.publish_frame(make_image_msg())
    io.ask("segment the cup")
    io.results_for("segment the cup")  # the two processes really exchanged data

    for pid in (os.getpid(), io.node.popen.pid):
        addresses = udp_addresses(pid)
        assert addresses, f"no UDP sockets found for pid {pid}: is `ss` reporting processes?"
        outside = [a for a in addresses if not a.startswith("127.0.0.1:")]
        assert not outside, f"pid {pid} has DDS sockets outside loopback: {outside}"


def test_the_loopback_profile_is_well_formed_xml():
    """Fast DDS' own parser forgives a `--` inside a comment; a strict one (doctor's) does not."""
    import xml.etree.ElementTree as ElementTree

    from conftest import LOOPBACK_PROFILE

    assert ElementTree.parse(LOOPBACK_PROFILE).getroot().tag.endswith("dds")
