"""Task data of the four exercises: ``load_task_data(config, device) -> TaskData``.

One module per task (points, mnist, colored_mnist, regression) builds the data on the CPU; ``common`` holds the data
classes, the split, the cache and the dispatch table; ``download`` fetches full MNIST and provides the ``data`` CLI
subcommand.
"""
from engine.tasks.common import (DataKey, DataNotAvailableError, Split, TaskData, clear_cache, data_key,
                                 load_task_data, split_indices)

__all__ = ["load_task_data", "TaskData", "Split", "DataNotAvailableError", "DataKey", "data_key", "clear_cache",
           "split_indices"]
