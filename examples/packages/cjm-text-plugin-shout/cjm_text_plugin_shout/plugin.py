import libdemo
from cjm_text_plugin_system.plugin_interface import TextPlugin


class ShoutPlugin(TextPlugin):
    name = "cjm-text-plugin-shout"
    version = "1.0.0"

    def get_config_schema(self):
        return {"type": "object", "properties": {"repeat": {"type": "integer", "default": 1}}}

    def execute(self, text="hello", **kwargs):
        repeat = int(self.config.get("repeat", 1))
        return {"text": " ".join([libdemo.render(text)] * repeat), "libdemo": libdemo.VERSION}
