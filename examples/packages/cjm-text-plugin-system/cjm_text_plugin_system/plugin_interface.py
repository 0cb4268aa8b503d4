"""The interface every text plugin implements."""

from cjm_worker import PluginInterface


class TextPlugin(PluginInterface):
    """Turns text into text; configured with a JSON object."""

    def initialize(self, config=None):
        self.config = dict(config or {})

    def get_current_config(self):
        return dict(getattr(self, "config", {}))
