"""A tick of `model_registry_sensor`, applied to the instance as the daemon would apply it."""

import logging

from dagster import AddDynamicPartitionsRequest, DeleteDynamicPartitionsRequest, build_sensor_context

from sensors.model_registry import model_registry_sensor


class Tick:
    """One sensor evaluation, with the lines it logged (what the UI shows on the tick)."""

    def __init__(self, defs, instance, cursor=None):
        self.lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: self.lines.append(f"{record.levelname}: {record.getMessage()}")
        with build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources, cursor=cursor
        ) as context:
            context.log.addHandler(handler)
            self.result = defs.resolve_sensor_def(model_registry_sensor.name)(context)
        requests = self.result.dynamic_partitions_requests
        self.added = [k for r in requests if isinstance(r, AddDynamicPartitionsRequest) for k in r.partition_keys]
        self.deleted = [k for r in requests if isinstance(r, DeleteDynamicPartitionsRequest) for k in r.partition_keys]
        # What the daemon does with the result.
        instance.add_dynamic_partitions("model_versions", self.added)
        for key in self.deleted:
            instance.delete_dynamic_partition("model_versions", key)

    @property
    def cursor(self):
        return self.result.cursor
