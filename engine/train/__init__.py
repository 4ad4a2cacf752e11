"""Training: the loop that trains K stacked runs at once, and the one driver every caller trains through.

    loop.py     train_stack (K runs of one stack, each reporting to its own sink), evaluate, checkpoints
    driver.py   run_configs: skip what the store has, stack the rest, train them on an executor, one RunOutcome
                per config (InProcess here; a process pool and Ray are engine/study's)
    device.py   resolve_device: auto picks CUDA, then MPS, then the CPU
"""
from engine.sinks import RunOutcome
from engine.train.device import DeviceError, device_name, resolve_device
from engine.train.driver import (InProcess, StackExecutor, StackWork, TrainingInterrupted, group_into_stacks,
                                 run_configs, stack_outcomes, train_and_report)
from engine.train.loop import (PER_RUN_FIELDS, checkpoint_bytes, evaluate, load_checkpoint, stack_key,
                               train_stack)

__all__ = ["train_stack", "evaluate", "stack_key", "PER_RUN_FIELDS", "checkpoint_bytes", "load_checkpoint",
           "run_configs", "RunOutcome", "TrainingInterrupted", "InProcess", "StackExecutor", "StackWork",
           "group_into_stacks", "stack_outcomes", "train_and_report", "resolve_device", "device_name",
           "DeviceError"]
