"""The fake npu_device is as strict as the adapter, so a runner mistake fails a test here."""

import pytest


def test_unknown_option_names_are_rejected(fake_npu):
    options = fake_npu.global_options()
    with pytest.raises(ValueError, match="has no option precison_mode"):
        options.precison_mode = "force_fp32"
    with pytest.raises(ValueError, match="has no option dump_pth"):
        options.dump_config.dump_pth = "/tmp"
    with pytest.raises(ValueError, match="has no option enable_profile"):
        options.profiling_config.enable_profile = True


def test_values_outside_the_allowed_list_are_rejected(fake_npu):
    options = fake_npu.global_options()
    with pytest.raises(ValueError, match="fp8"):
        options.precision_mode = "fp8"
    with pytest.raises(ValueError, match="everything"):
        options.dump_config.dump_mode = "everything"
    with pytest.raises(ValueError, match="overflow"):
        options.dump_config.dump_debug_mode = "overflow"


def test_values_of_another_type_are_rejected(fake_npu):
    options = fake_npu.global_options()
    with pytest.raises(TypeError):
        options.dump_config.enable_dump = "True"
    with pytest.raises(TypeError):
        options.dump_config.dump_step = 10
    with pytest.raises(TypeError):
        options.op_debug_level = True
    with pytest.raises(TypeError):
        options.dump_config = {"enable_dump": True}


def test_open_snapshots_what_was_set_and_freezes_the_options(fake_npu, tmp_path):
    options = fake_npu.global_options()
    options.precision_mode = "allow_mix_precision"
    options.dump_config.enable_dump = True
    options.dump_config.dump_path = str(tmp_path)
    handle = fake_npu.open().as_default()
    assert handle is fake_npu.last_opened and handle.is_default and handle.device_id == 0
    assert handle.options == {
        "precision_mode": "allow_mix_precision",
        "dump_config": {"enable_dump": True, "dump_path": str(tmp_path)},
    }
    with pytest.raises(RuntimeError, match="after npu_device.open"):
        options.precision_mode = "force_fp32"
    with pytest.raises(RuntimeError, match="after npu_device.open"):
        options.dump_config.dump_step = "5"


def test_open_reads_the_device_id_and_rank_variables(fake_npu, monkeypatch, tmp_path):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "3")
    monkeypatch.setenv("RANK_TABLE_FILE", str(tmp_path / "rank_table.json"))
    monkeypatch.setenv("RANK_SIZE", "8")
    monkeypatch.setenv("RANK_ID", "5")
    handle = fake_npu.open()
    assert (handle.device_id, handle.workers_num, handle.worker_id) == (3, 8, 5)
    assert handle.is_cluster_worker()
    with pytest.raises(RuntimeError, match="existed instance"):
        fake_npu.open(2)


def test_open_refuses_a_dump_into_a_missing_folder(fake_npu, tmp_path):
    options = fake_npu.global_options()
    options.dump_config.enable_dump = True
    options.dump_config.dump_path = str(tmp_path / "missing")
    with pytest.raises(RuntimeError, match="dump_path"):
        fake_npu.open()


def test_distribute_is_a_recording_no_op_on_one_worker(fake_npu):
    import tensorflow as tf

    fake_npu.open()
    dataset = tf.data.Dataset.range(8)
    assert fake_npu.distribute.shard_and_rebatch_dataset(dataset, 4) == (dataset, 4)
    assert fake_npu.distribute.all_reduce([1.0]) == [1.0]
    fake_npu.distribute.broadcast([tf.Variable(1.0)], root_rank=0)
    assert fake_npu.distribute.calls == [
        ("shard_and_rebatch_dataset", 4, False), ("all_reduce", "mean", False),
        ("broadcast", 0, 1, False),
    ]


def test_distribute_shards_like_the_adapter_on_a_cluster_worker(fake_npu, monkeypatch, tmp_path):
    import tensorflow as tf

    for name, value in (("RANK_TABLE_FILE", str(tmp_path)), ("RANK_SIZE", "4"), ("RANK_ID", "1")):
        monkeypatch.setenv(name, value)
    fake_npu.open()
    shard, batch = fake_npu.distribute.shard_and_rebatch_dataset(tf.data.Dataset.range(8), 8)
    assert (list(shard.as_numpy_iterator()), batch) == ([1, 5], 2)
    with pytest.raises(ValueError, match="divisible"):
        fake_npu.distribute.shard_and_rebatch_dataset(tf.data.Dataset.range(8), 6)
