"""The shipped `accelerate launch --config_file` configs (earthvl/recipes/accelerate): read by accelerate's own
config loader and launcher code, offline and on CPU, down to the FSDP and DeepSpeed plugins a run would build."""

import configparser
import os
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from torch.distributed.fsdp import StateDictType

import earthvl
from earthvl.recipes import recipe_path, shipped_recipes

EXPECTED = {
    "accelerate/ddp": {"distributed_type": DistributedType.MULTI_GPU},
    "accelerate/fsdp": {
        "distributed_type": DistributedType.FSDP,
        "fsdp_config": {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,  # FULL_SHARD
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # save_model writes a plain adapter folder
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_activation_checkpointing": False,  # the recipes checkpoint through transformers
        },
    },
    "accelerate/zero2": {
        "distributed_type": DistributedType.DEEPSPEED,
        "deepspeed_config": {"zero_stage": 2, "zero3_init_flag": False, "deepspeed_multinode_launcher": "standard"},
    },
    "accelerate/zero3": {
        "distributed_type": DistributedType.DEEPSPEED,
        "deepspeed_config": {
            "zero_stage": 3,
            "zero3_init_flag": True,
            "zero3_save_16bit_model": True,
            "deepspeed_multinode_launcher": "standard",
        },
    },
}


def launch(name: str, *extra: str):
    """What `accelerate launch --config_file <name> [extra] -m earthvl train vlm ...` resolves: its options, the
    launcher command (None: torchrun) and the environment of the training processes."""
    argv = ["--config_file", recipe_path(name), *extra, "-m", "earthvl", "train", "vlm", "--config", "vlm/geochat"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        cmd, env = prepare_deepspeed_cmd_env(args)
        return args, cmd, env
    return args, None, prepare_multi_gpu_env(args)


def test_every_shipped_accelerate_config_is_checked():
    assert {name for name in shipped_recipes() if name.startswith("accelerate/")} == set(EXPECTED)


def test_package_data_ships_the_configs():
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).parents[1] / "setup.cfg")
    patterns = parser["options.package_data"]["earthvl"].split()
    package = Path(earthvl.__file__).parent
    for name in EXPECTED:
        relative = Path(recipe_path(name)).relative_to(package)
        assert any(relative.match(pattern) for pattern in patterns), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_values(name):
    config = load_config_from_file(recipe_path(name))
    assert isinstance(config, ClusterConfig)  # a local-machine config, all keys known to this accelerate
    expected = EXPECTED[name]
    assert config.distributed_type == expected["distributed_type"]
    assert config.mixed_precision == "bf16" and config.downcast_bf16 == "no"
    assert (config.num_processes, config.num_machines, config.machine_rank) == (8, 1, 0)
    assert config.use_cpu is False and config.same_network is True
    for section in ("fsdp_config", "deepspeed_config"):
        values, wanted = getattr(config, section), expected.get(section, {})
        assert {key: values.get(key) for key in wanted} == wanted and bool(values) == bool(wanted), section
    if config.distributed_type == DistributedType.DEEPSPEED:
        offload = (config.deepspeed_config["offload_optimizer_device"], config.deepspeed_config["offload_param_device"])
        assert offload == ("none", "none")
        assert "gradient_accumulation_steps" not in config.deepspeed_config  # taken from the recipe


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_explains_the_overrides(name):
    header = Path(recipe_path(name)).read_text().split("compute_environment:")[0]
    for flag in ("--num_processes", "--num_machines", "--machine_rank", "--main_process_ip", "QLoRA"):
        assert flag in header, (name, flag)


def test_fsdp_plugin_as_launched():
    _, _, env = launch("accelerate/fsdp")
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.transformer_cls_names_to_wrap is None  # the model's _no_split_modules decide
    assert plugin.cpu_ram_efficient_loading is True and plugin.activation_checkpointing is False


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_plugin_as_launched(stage):
    _, cmd, env = launch(f"accelerate/zero{stage}")
    assert cmd is None  # one machine: torchrun, not the deepspeed launcher
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()  # builds the DeepSpeed config dict without importing deepspeed
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == zero["stage"] == stage
    assert plugin.zero3_init_flag is (stage == 3)
    assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    # batch sizes, accumulation and clipping follow the recipe's SFTConfig
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_command_line_overrides_the_config(name):
    multi_node = ["--num_processes", "16", "--num_machines", "2", "--machine_rank", "1"]
    multi_node += ["--main_process_ip", "10.0.0.1"]
    args, cmd, env = launch(name, *multi_node)
    assert (args.num_processes, args.num_machines, args.machine_rank, args.main_process_ip) == (16, 2, 1, "10.0.0.1")
    assert cmd is None  # torchrun on each machine (for DeepSpeed: the `standard` launcher, no hostfile or pdsh)
    assert (str(args.nnodes), int(args.node_rank), str(args.nproc_per_node)) == ("2", 1, "8")
    assert launch(name, "--mixed_precision", "no")[2]["ACCELERATE_MIXED_PRECISION"] == "no"
