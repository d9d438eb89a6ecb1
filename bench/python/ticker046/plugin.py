"""The bench's ticker in the original 0.0.46's form: reports progress every `every_ms`
with the time of the report in its message (nanoseconds since the epoch), for
`ticks` ticks; stops at the next tick once cancelled, unless `deaf`."""

import time
from typing import Any, Dict, Optional

from cjm_plugin_system.core.interface import PluginInterface


class TickerPlugin(PluginInterface):
    def __init__(self) -> None:
        self.config: Dict[str, Any] = {}

    @property
    def name(self) -> str:
        return "ticker046"

    @property
    def version(self) -> str:
        return "0.1.0"

    def initialize(self, config: Optional[Dict[str, Any]] = None) -> None:
        self.config = dict(config or {})

    def execute(self, ticks: int = 1, every_ms: int = 0, deaf: bool = False) -> Dict[str, Any]:
        for tick in range(int(ticks)):
            if not deaf:
                self.check_cancel()
            self.report_progress((tick + 1) / int(ticks), str(time.time_ns()))
            if every_ms:
                time.sleep(int(every_ms) / 1000)
        return {"ticks": int(ticks)}

    def get_config_schema(self) -> Dict[str, Any]:
        return {"type": "object", "properties": {}}

    def get_current_config(self) -> Dict[str, Any]:
        return dict(self.config)
