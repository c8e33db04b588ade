"""Replay refuses bad input before touching ROS, with an error naming the problem."""
import numpy as np
import pytest

from bagfactory import write_bag
from lisa_ros.tools import bag_io
from lisa_ros.tools.cli import main


def replay(bag, tmp_path, *extra):
    return main(["replay", str(bag), "--output", str(tmp_path / "out"), "--no-progress", *extra])


def expect_error(capsys, tmp_path, code, *fragments):
    err = capsys.readouterr().err
    assert code == 2, err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written
    return err


def test_missing_image_topic_lists_the_bag_topics(tmp_path, capsys):
    write_bag(tmp_path / "bag", instructions={0: "x"})
    code = replay(tmp_path / "bag", tmp_path, "--image-topic", "/front/image")
    expect_error(capsys, tmp_path, code, "no topic '/front/image'", "/camera/image [sensor_msgs/msg/Image]",
                 "/instruction")


def test_missing_instruction_topic_says_what_to_pass(tmp_path, capsys):
    write_bag(tmp_path / "bag")
    expect_error(capsys, tmp_path, replay(tmp_path / "bag", tmp_path), "no /instruction topic", "--instruction")


def test_image_topic_of_another_type(tmp_path, capsys):
    write_bag(tmp_path / "bag", instructions={0: "x"})
    code = replay(tmp_path / "bag", tmp_path, "--image-topic", "/instruction")
    expect_error(capsys, tmp_path, code, "'/instruction'", "'std_msgs/msg/String'", "sensor_msgs/msg/Image")


def test_unknown_message_type(tmp_path, capsys):
    store = bag_io.typestore()
    with bag_io.OutputBag(tmp_path / "bag") as bag:
        definition = "uint32 width\nuint32 height\nuint8[] pixels\n"
        bag._writer.add_connection("/camera/image", "vendor_msgs/msg/FancyImage", msgdef=definition,
                                   rihs01="RIHS01_" + "0" * 64)
        bag.write("/instruction", 1, store.types[bag_io.STRING](data="x"), bag_io.STRING)
    code = replay(tmp_path / "bag", tmp_path, "--image-topic", "/camera/image")
    expect_error(capsys, tmp_path, code, "'vendor_msgs/msg/FancyImage'")


@pytest.mark.parametrize("storage, suffix", [("sqlite3", ".db3"), ("mcap", ".mcap")])
def test_truncated_bag(tmp_path, capsys, storage, suffix):
    write_bag(tmp_path / "bag", frames=6, instructions={0: "x"}, storage=storage)
    data_file = next((tmp_path / "bag").glob(f"*{suffix}"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    expect_error(capsys, tmp_path, replay(tmp_path / "bag", tmp_path), str(tmp_path / "bag"), "truncated or corrupt")


def bare_file(tmp_path, storage, suffix, name="bare"):
    """The storage file of a bag written by rosbags, alone (as Foxglove or the mcap CLI leave it)."""
    write_bag(tmp_path / f"{storage}_bag", frames=6, instructions={0: "x"}, storage=storage)
    bare = tmp_path / f"{name}{suffix}"
    next((tmp_path / f"{storage}_bag").glob(f"*{suffix}")).rename(bare)
    return bare


@pytest.mark.parametrize("storage, suffix", [("sqlite3", ".db3"), ("mcap", ".mcap")])
def test_bare_storage_file_is_read_like_a_bag_folder(tmp_path, storage, suffix):
    with bag_io.InputBag(bare_file(tmp_path, storage, suffix)) as bag:
        assert bag.topics == {"/camera/image": bag_io.IMAGE, "/instruction": bag_io.STRING}
        assert [msg.data for _, msg in bag.messages("/instruction")] == ["x"]
        assert len(list(bag.messages("/camera/image"))) == 6


def test_bare_mcap_cut_at_its_end_is_corrupt_with_the_recover_hint(tmp_path, capsys):
    bare = bare_file(tmp_path, "mcap", ".mcap")
    bare.write_bytes(bare.read_bytes()[: bare.stat().st_size * 9 // 10])
    err = expect_error(capsys, tmp_path, replay(bare, tmp_path))
    assert f"bag {bare} cannot be opened (truncated or corrupt?)" in err, err
    assert f"mcap recover {bare} -o {tmp_path / 'bare-recovered.mcap'}" in err
    assert "not a rosbag2 directory" not in err


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_bare_db3_cut_short_is_corrupt(tmp_path, capsys, fraction):
    """Cut at 99 % the database still opens and fails while being read (apsw.IOError inside rosbags)."""
    bare = bare_file(tmp_path, "sqlite3", ".db3")
    bare.write_bytes(bare.read_bytes()[: int(bare.stat().st_size * fraction)])
    err = expect_error(capsys, tmp_path, replay(bare, tmp_path))
    assert f"bag {bare} cannot be" in err and "(truncated or corrupt?)" in err, err
    assert "not a rosbag2 directory" not in err and "mcap recover" not in err


def test_folder_without_metadata_names_its_data_file(tmp_path, capsys):
    bare = bare_file(tmp_path, "mcap", ".mcap")
    (tmp_path / "orphan").mkdir()
    bare.rename(tmp_path / "orphan" / "rec_0.mcap")
    expect_error(capsys, tmp_path, replay(tmp_path / "orphan", tmp_path), "no metadata.yaml", "rec_0.mcap")


def test_file_of_another_kind_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a bag")
    expect_error(capsys, tmp_path, replay(tmp_path / "notes.txt", tmp_path), "a bare .mcap or .db3 file")


def test_wrong_encoding_names_the_frame(tmp_path, capsys):
    with bag_io.OutputBag(tmp_path / "bag") as bag:
        for index, encoding in enumerate(["rgb8", "32FC3"]):
            msg = bag_io.raw_image_msg(np.zeros((4, 4, 3), np.uint8), bag_io.header(index, "cam"))
            msg.encoding = encoding
            bag.write("/camera/image", index, msg, bag_io.IMAGE)
        bag.write("/instruction", 0, bag_io.typestore().types[bag_io.STRING](data="x"), bag_io.STRING)
    expect_error(capsys, tmp_path, replay(tmp_path / "bag", tmp_path), "frame 1 on '/camera/image'", "'32FC3'")


def test_truncated_image_data_names_the_frame(tmp_path, capsys):
    with bag_io.OutputBag(tmp_path / "bag") as bag:
        msg = bag_io.raw_image_msg(np.zeros((4, 4, 3), np.uint8), bag_io.header(0, "cam"))
        msg.data = msg.data[:20]
        bag.write("/camera/image", 0, msg, bag_io.IMAGE)
        bag.write("/instruction", 0, bag_io.typestore().types[bag_io.STRING](data="x"), bag_io.STRING)
    expect_error(capsys, tmp_path, replay(tmp_path / "bag", tmp_path), "frame 0", "data length 20")


def test_not_a_bag_directory(tmp_path, capsys):
    (tmp_path / "bag").mkdir()
    expect_error(capsys, tmp_path, replay(tmp_path / "bag", tmp_path), "no metadata.yaml")


def test_two_image_topics_need_a_choice(tmp_path, capsys):
    write_bag(tmp_path / "bag", instructions={0: "x"})
    with bag_io.OutputBag(tmp_path / "bag2") as bag:
        for topic in ("/left/image", "/right/image"):
            msg = bag_io.raw_image_msg(np.zeros((4, 4, 3), np.uint8), bag_io.header(0, "cam"))
            bag.write(topic, 0, msg, bag_io.IMAGE)
    expect_error(capsys, tmp_path, replay(tmp_path / "bag2", tmp_path), "several image topics", "--image-topic")


def test_a_depth_stream_beside_the_colour_one_is_not_an_image_topic_choice(tmp_path):
    """The depth Image topic goes to the node's depth input; only a bag of depth images alone replays it as frames."""
    from lisa_ros.tools.replay import resolve_image_topic

    write_bag(tmp_path / "bag", frames=1, depth_mm=900)
    with bag_io.InputBag(tmp_path / "bag") as bag:
        assert resolve_image_topic(bag, None) == ("/camera/image", bag_io.IMAGE)
    write_bag(tmp_path / "depth_only", frames=1, image_topic="/camera/depth/image_raw")
    with bag_io.InputBag(tmp_path / "depth_only") as bag:
        assert resolve_image_topic(bag, None) == ("/camera/depth/image_raw", bag_io.IMAGE)


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    write_bag(tmp_path / "bag", instructions={0: "x"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert replay(tmp_path / "bag", tmp_path) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
